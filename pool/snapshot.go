package pool

import (
	"net"
	"time"
)

// ConnInfo describes one server connection for the admin console (SHOW
// SERVERS). It is a copy; it holds no reference to the connection.
type ConnInfo struct {
	// ID is the connection's process-unique number (ServerConn.ID).
	ID uint64
	// Addr is host:port as dialed; Host the configured host name.
	Addr, Host string
	// LocalAddr is pgferry's end of the socket.
	LocalAddr net.Addr
	// PID is the server backend's process id.
	PID uint32
	// TLS reports whether the connection is encrypted.
	TLS bool
	// Created is when the connection was opened. LastUsed is when it was
	// last released to the pool; it is zero for a lent connection, whose
	// borrower owns that field.
	Created, LastUsed time.Time
	// CloseNeeded is set when the connection predates a Reconnect and will
	// be closed instead of reused (PgBouncer's close_needed).
	CloseNeeded bool
	// PreparedStatements counts the statements pgferry prepared on the
	// connection and keeps (StmtCache.Count).
	PreparedStatements int
}

// IdleConns describes the connections idle in the pool, most recently
// released last. Safe for concurrent use; it does not block on I/O.
func (p *Pool) IdleConns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnInfo, 0, len(p.idle))
	for _, sc := range p.idle {
		ci := connInfo(sc)
		ci.LastUsed = sc.lastUsed
		ci.CloseNeeded = sc.gen != p.gen
		out = append(out, ci)
	}
	return out
}

// LentConnInfo describes sc, a connection the pool has lent out. It reads
// only what is fixed when the connection is opened, and the atomic count
// of its prepared statements, so a caller other than
// the borrower may use it while it holds a reference to sc it obtained
// under the borrower's own synchronisation.
func (p *Pool) LentConnInfo(sc *ServerConn) ConnInfo {
	ci := connInfo(sc)
	p.mu.Lock()
	ci.CloseNeeded = sc.gen != p.gen
	p.mu.Unlock()
	return ci
}

func connInfo(sc *ServerConn) ConnInfo {
	return ConnInfo{
		ID:        sc.id,
		Addr:      sc.Addr,
		Host:      sc.Host,
		LocalAddr: sc.LocalAddr(),
		PID:       sc.PID,
		TLS:       sc.TLS,
		Created:   sc.created,

		PreparedStatements: sc.Stmts.Count(),
	}
}

// CloseNeeded counts the open connections, lent, idle or being closed,
// that predate the last Reconnect: they are closed when they come back
// (PgBouncer's close_needed), and one being closed counts until its close
// is over (its backend exited, or closeWait passed); and the logins begun
// before it and still under way, whose connections are closed when they
// end. Safe for concurrent use.
func (p *Pool) CloseNeeded() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.staleDials
	for _, sc := range p.conns {
		if sc.gen != p.gen {
			n++
		}
	}
	return n
}
