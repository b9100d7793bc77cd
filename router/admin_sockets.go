// SHOW CLIENTS and SHOW SERVERS: PgBouncer's socket lists.

package router

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
)

// pgTime formats a time as PgBouncer's console does.
func pgTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 MST")
}

func splitAddr(a string) (string, int) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "unix", 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}

func addrOf(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	return splitAddr(a.String())
}

// Pointers in SHOW CLIENTS/SERVERS (ptr, link) are identifiers that join
// the two lists, like PgBouncer's object addresses.
func clientPtr(id uint64) string { return fmt.Sprintf("0x%x", id) }
func serverPtr(id uint64) string { return fmt.Sprintf("0x%x", 1<<40|id) }

func tlsDesc(conn net.Conn) string {
	switch c := conn.(type) {
	case *tls13.Conn:
		return c.Describe()
	case *tls.Conn:
		cs := c.ConnectionState()
		return tls.VersionName(cs.Version) + "/" + tls.CipherSuiteName(cs.CipherSuite)
	}
	return ""
}

func (c *adminConsole) showClients(rs *resultSet) {
	rs.cols = socketCols
	_, sessions := c.srv.lists()
	for _, ss := range sessions {
		state, link := "active", ""
		if !ss.admin {
			if ss.clientState() == clientWaiting {
				state = "waiting"
			}
			ss.mu.Lock()
			if ss.server != nil {
				link = serverPtr(ss.server.ID())
			}
			ss.mu.Unlock()
		}
		addr, port := splitAddr(ss.clientAddr())
		local, tlsName := ss.sockInfo()
		laddr, lport := addrOf(local)
		rs.add("C", ss.user, ss.database, state, addr, port, laddr, lport,
			pgTime(ss.connectedAt.Time()), pgTime(ss.connectedAt.Time()), 0, 0, 0,
			clientPtr(ss.id), link, 0, tlsName, ss.appName, ss.id)
	}
}

// showServers lists server connections lent to clients and those idle in
// the pools. Connections pgferry holds for itself (a pool's LISTEN
// connection, the first login that learns server parameters) are not
// listed.
func (c *adminConsole) showServers(rs *resultSet) {
	rs.cols = socketCols
	entries, sessions := c.srv.lists()
	type lent struct {
		info   pool.ConnInfo
		db     string
		user   string
		client uint64
	}
	var active []lent
	for _, ss := range sessions {
		e := ss.poolEntry()
		if ss.admin || e == nil {
			continue
		}
		ss.mu.Lock()
		sc := ss.server
		ss.mu.Unlock()
		if sc == nil {
			continue
		}
		active = append(active, lent{sc.Pool().LentConnInfo(sc), e.dbName, sc.Pool().User(), ss.id})
	}
	row := func(state, db, user string, ci pool.ConnInfo, link string, requested time.Time) {
		addr, port := splitAddr(ci.Addr)
		laddr, lport := addrOf(ci.LocalAddr)
		tlsName := ""
		if ci.TLS {
			tlsName = "TLS"
		}
		rs.add("S", user, db, state, addr, port, laddr, lport,
			pgTime(ci.Created), pgTime(requested), 0, 0, ci.CloseNeeded,
			serverPtr(ci.ID), link, ci.PID, tlsName, "", ci.ID)
	}
	for _, a := range active {
		row("active", a.db, a.user, a.info, clientPtr(a.client), a.info.Created)
	}
	for _, e := range entries {
		for _, p := range e.allPools() {
			for _, ci := range p.IdleConns() {
				row("idle", e.dbName, p.User(), ci, "", ci.LastUsed)
			}
		}
	}
}

// sockInfo returns the client socket's local address and its TLS version
// and cipher ("" for plain) for SHOW CLIENTS; a parked plain session's
// address comes from its bare descriptor.
func (ss *session) sockInfo() (local net.Addr, tlsName string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.raw == nil {
		return fdLocalAddr(int(ss.fd)), tlsDesc(ss.conn)
	}
	return ss.raw.LocalAddr(), tlsDesc(ss.conn)
}
