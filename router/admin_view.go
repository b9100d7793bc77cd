// The Server as the admin console (router/admin) sees it: plain snapshots
// of pools and sockets gathered under the router's own locks, and the
// control actions.

package router

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/router/admin"
)

// adminBackend implements admin.Backend over a Server.
type adminBackend struct{ srv *Server }

func (b adminBackend) Config() *configs.Config       { return b.srv.cfg.Load() }
func (b adminBackend) Started() time.Time            { return b.srv.started }
func (b adminBackend) Draining() bool                { return b.srv.isDraining() }
func (b adminBackend) PauseState() *admin.PauseState { return &b.srv.adminPause }

func (b adminBackend) Snapshot() admin.Snapshot {
	snap := b.srv.Snapshot()
	out := admin.Snapshot{
		Clients:      snap.Clients,
		AdminClients: snap.AdminClients,
		Pools:        make([]admin.PoolInfo, len(snap.Pools)),
	}
	for i, p := range snap.Pools {
		c := p.Counters
		out.Pools[i] = admin.PoolInfo{
			Database: p.Database,
			User:     p.User,
			Mode:     p.Mode,
			Stat:     p.Stat,
			Counters: admin.Counters{
				Transactions:    c.Transactions,
				Queries:         c.Queries,
				TransactionTime: c.TransactionTime,
				QueryTime:       c.QueryTime,
				ClientParses:    c.ClientParses,
				ServerParses:    c.ServerParses,
				Binds:           c.Binds,
				ClientLogins:    c.ClientLogins,
				BytesReceived:   c.BytesReceived,
				BytesSent:       c.BytesSent,
				PinnedClients:   c.PinnedClients,
			},
			ClientsActive:  p.ClientsActive,
			ClientsWaiting: p.ClientsWaiting,
			ClientsIdle:    p.ClientsIdle,
		}
		for _, r := range p.Replicas {
			out.Pools[i].Replicas = append(out.Pools[i].Replicas, admin.ReplicaInfo{Name: r.Name, Stat: r.Stat, Status: r.Status})
		}
	}
	return out
}

func (b adminBackend) AuthUsers() []string { return b.srv.store.Load().Names() }

func (b adminBackend) Clients() []admin.ClientInfo {
	sessions, logins := b.srv.clientLists()
	out := make([]admin.ClientInfo, 0, len(sessions)+len(logins))
	for _, ss := range logins {
		// Only what the login wrote before it was listed (registerLogin).
		ci := admin.ClientInfo{
			ID:          ss.id,
			User:        ss.user,
			Database:    ss.database,
			Login:       true,
			Addr:        ss.clientAddr(),
			ConnectedAt: ss.connectedAt.Time(),
		}
		ci.LocalAddr, ci.TLS = ss.sockInfo()
		out = append(out, ci)
	}
	for _, ss := range sessions {
		ci := admin.ClientInfo{
			ID:          ss.id,
			User:        ss.user,
			Database:    ss.database,
			Addr:        ss.clientAddr(),
			ConnectedAt: ss.connectedAt.Time(),
			AppName:     ss.appName,

			PreparedStatements: int(ss.nStmts.Load()),
		}
		if !ss.admin {
			ci.Waiting = ss.clientState() == clientWaiting
			ss.mu.Lock()
			if ss.server != nil {
				ci.Linked, ci.Server = true, ss.server.ID()
			}
			ss.mu.Unlock()
		}
		ci.LocalAddr, ci.TLS = ss.sockInfo()
		out = append(out, ci)
	}
	return out
}

func (b adminBackend) Servers() []admin.ServerInfo {
	entries, sessions := b.srv.lists()
	var out []admin.ServerInfo
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
		out = append(out, admin.ServerInfo{Database: e.dbName, User: sc.Pool().User(),
			Conn: sc.Pool().LentConnInfo(sc), Lent: true, Client: ss.id})
	}
	for _, e := range entries {
		for _, p := range e.allPools() {
			for _, ci := range p.IdleConns() {
				out = append(out, admin.ServerInfo{Database: e.dbName, User: p.User(), Conn: ci})
			}
		}
	}
	return out
}

func (b adminBackend) Pools(db string) admin.PoolSet {
	entries, _ := b.srv.lists()
	if db == "" {
		return poolSet(entries)
	}
	var out poolSet
	for _, e := range entries {
		if e.dbName == db {
			out = append(out, e)
		}
	}
	return out
}

func (b adminBackend) KillClients(db string) int {
	sessions, logins := b.srv.clientLists()
	n := 0
	var running []killedQuery
	for _, ss := range append(logins, sessions...) {
		if !ss.admin && (db == "" || ss.database == db) {
			if sc := ss.kill(evKillDatabase); sc != nil {
				running = append(running, killedQuery{ss, sc})
			}
			n++
		}
	}
	cancelKilled(running)
	return n
}

func (b adminBackend) KillClient(id uint64) bool {
	ss := b.srv.clientByID(id) // a session, or a client still logging in
	if ss == nil || ss.admin {
		return false
	}
	if sc := ss.kill(evKillClient); sc != nil {
		ss.cancelRunning(context.Background(), sc)
	}
	return true
}

func (b adminBackend) Reload() error {
	h := b.srv.adminHooks()
	if h.Reload == nil {
		return admin.ErrNoAction
	}
	return h.Reload()
}

func (b adminBackend) Shutdown() error {
	h := b.srv.adminHooks()
	if h.Shutdown == nil {
		return admin.ErrNoAction
	}
	h.Shutdown()
	return nil
}

// poolSet implements admin.PoolSet over pool entries.
type poolSet []*poolEntry

func (ps poolSet) Len() int { return len(ps) }

func (ps poolSet) Paused() int {
	n := 0
	for _, e := range ps {
		if e.pool.Stat().Paused {
			n++
		}
	}
	return n
}

func (ps poolSet) Pause(ctx context.Context) error {
	// Mark every pool paused first, then wait for each to drain.
	for _, e := range ps {
		pauseMarked(e)
	}
	for _, e := range ps {
		for _, p := range e.allPools() {
			if err := p.Pause(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// pauseMarked marks e's pools paused without waiting for them to drain
// (a canceled context makes Pool.Pause return at once).
func pauseMarked(e *poolEntry) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range e.allPools() {
		p.Pause(done)
	}
}

func (ps poolSet) Resume() {
	for _, e := range ps {
		for _, p := range e.allPools() {
			p.Resume()
		}
	}
}

func (ps poolSet) Reconnect() {
	for _, e := range ps {
		for _, p := range e.allPools() {
			p.Reconnect()
		}
	}
}

func (ps poolSet) CloseNeeded() int {
	n := 0
	for _, e := range ps {
		for _, p := range e.allPools() {
			n += p.CloseNeeded()
		}
	}
	return n
}

// adminSession implements admin.Session over the console's own session.
type adminSession struct{ ss *session }

func (a adminSession) Killed() bool { return a.ss.has(evKill) }

func (a adminSession) ClearWake() {
	// A console session never parks, so raw stays set.
	a.ss.raw.SetReadDeadline(time.Time{})
	a.ss.flags.And(^evWake)
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
