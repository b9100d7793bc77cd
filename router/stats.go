package router

import (
	"cmp"
	"slices"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/fleet"
	"github.com/pgferry/pgferry/router/lag"
)

// Snapshot is a read-only, point-in-time view of the router for the admin
// console and for metrics collected at scrape time. It holds plain values
// only; the caller owns it.
type Snapshot struct {
	// Clients is the number of connected client sockets, including admin
	// console clients and clients still logging in.
	Clients int64
	// ParkedClients is the number of idle sessions the parker holds
	// without a goroutine.
	ParkedClients int
	// PinnedTotal counts sessions ever pinned to a server connection by
	// session state (cumulative).
	PinnedTotal int64
	// Panics counts panics recovered in client sessions since start, each
	// logged with its stack: the session ended or lost its server, the
	// process went on.
	Panics int64
	// AdminClients is the number of logged-in admin console clients.
	AdminClients int
	// Draining is true once Shutdown has begun.
	Draining bool
	// MaxClientConn is the max_client_conn in force (0: no cap).
	MaxClientConn int
	// DBLimits and UserLimits are the max_db_connections and
	// max_user_connections caps that have pools, keyed by client-facing
	// database name and by server login user, with their use.
	DBLimits, UserLimits map[string]pool.LimitStat
	// Fleet is the fleet budgets' state (router/fleet); nil without a
	// fleet budget. The caps in DBLimits and UserLimits are the shares.
	Fleet *fleet.Status
	// Pools lists every pool, sorted by database then user.
	Pools []PoolSnapshot
}

// PoolSnapshot describes one (database, user) pool.
type PoolSnapshot struct {
	// Database is the client-facing database name; User the server login
	// user; Mode the pool mode ("transaction" or "session").
	Database, User, Mode string
	// Stat is the pool's own snapshot (server connections, waiters).
	Stat pool.Stat
	// Size, MinSize and ReserveSize are the pool's configured pool_size,
	// min_pool_size and reserve_pool (globals already applied).
	Size, MinSize, ReserveSize int
	// Counters are the cumulative per-pool counters kept by sessions.
	Counters PoolCounters
	// ClientsActive counts logged-in clients linked to a server connection,
	// ClientsWaiting those queued for one, ClientsIdle the rest.
	ClientsActive, ClientsWaiting, ClientsIdle int
	// Replicas describes the database's read replicas, if any.
	Replicas []ReplicaSnapshot
	// Primary is the lag monitor's view of the primary (zero without
	// replicas).
	Primary lag.PrimaryStatus
}

// ReplicaSnapshot is one read replica: its pool and the lag monitor's view.
type ReplicaSnapshot struct {
	// Name is host:port.
	Name   string
	Stat   pool.Stat
	Status lag.ReplicaStatus
}

// PoolCounters are a pool's cumulative counters (PinnedClients excepted,
// which is a current count).
type PoolCounters struct {
	// Transactions counts completed transactions (server released).
	Transactions uint64
	// Queries counts ReadyForQuery messages seen: queries and Syncs.
	Queries uint64
	// TransactionTime is the total time server connections were linked.
	TransactionTime time.Duration
	// ClientParses counts named Parse messages from clients; ServerParses
	// the Parse messages sent to servers for named statements.
	ClientParses, ServerParses uint64
	// Binds counts Bind messages.
	Binds uint64
	// ClientLogins counts successful client logins.
	ClientLogins uint64
	// PinnedClients is the number of sessions pinned right now.
	PinnedClients int64
	// PumpedLoans counts server loans whose responses a second goroutine
	// relayed: every loan in session mode or of a pinned client, and the
	// transaction-mode loans the session goroutine handed off (COPY FROM
	// STDIN, a response slower than 50 ms, a cancel in flight). The rest
	// were relayed inline.
	PumpedLoans uint64
	// LoopEntries counts sessions that went over to the relay loop (served
	// without a goroutine between requests), and LoopHandbacks those it
	// handed back to a goroutine for what it does not serve (session
	// state, COPY, a paused pool, a wake, ...).
	LoopEntries, LoopHandbacks uint64
	// AbandonedCancels counts queries cancelled because their client
	// disconnected while they ran.
	AbandonedCancels uint64
	// BytesReceived and BytesSent count client traffic in bytes;
	// QueryTime adds up how long queries ran on servers.
	BytesReceived, BytesSent uint64
	QueryTime                time.Duration
}

// carriedCounters are the cumulative counters of the pools a reload
// replaced for one (database, user). Counts a replaced pool's remaining
// loans add after the reload are not in them.
type carriedCounters struct {
	counters PoolCounters
	stat     pool.Stat
}

// carry adds the counters of e, which a reload takes out of the pools, to
// those kept for k. s.mu is held.
func (s *Server) carry(k poolKey, e *poolEntry) {
	if s.carried == nil {
		s.carried = make(map[poolKey]*carriedCounters)
	}
	c := s.carried[k]
	if c == nil {
		c = new(carriedCounters)
		s.carried[k] = c
	}
	c.counters.add(e.counters())
	c.stat = addCumulative(c.stat, e.pool.Stat())
}

// add adds o's cumulative counters to c (PinnedClients, a current count,
// is left alone).
func (c *PoolCounters) add(o PoolCounters) {
	c.Transactions += o.Transactions
	c.Queries += o.Queries
	c.TransactionTime += o.TransactionTime
	c.ClientParses += o.ClientParses
	c.ServerParses += o.ServerParses
	c.Binds += o.Binds
	c.ClientLogins += o.ClientLogins
	c.PumpedLoans += o.PumpedLoans
	c.LoopEntries += o.LoopEntries
	c.LoopHandbacks += o.LoopHandbacks
	c.AbandonedCancels += o.AbandonedCancels
	c.BytesReceived += o.BytesReceived
	c.BytesSent += o.BytesSent
	c.QueryTime += o.QueryTime
}

// addCumulative returns st with o's cumulative counters added.
func addCumulative(st, o pool.Stat) pool.Stat {
	st.AcquireCount += o.AcquireCount
	st.WaitCount += o.WaitCount
	st.WaitTime += o.WaitTime
	st.DialCount += o.DialCount
	st.DialFailures += o.DialFailures
	st.Destroyed += o.Destroyed
	st.Retries += o.Retries
	st.Checks += o.Checks
	st.Looks += o.Looks
	return st
}

// Snapshot returns the current state of every pool and of the client
// sessions. It is safe for concurrent use, does no I/O and holds the
// server's lock only to copy the pool and session lists.
func (s *Server) Snapshot() Snapshot {
	entries, sessions := s.lists()
	s.mu.Lock()
	carried := make(map[poolKey]carriedCounters, len(s.carried))
	for k, c := range s.carried {
		carried[k] = *c
	}
	s.mu.Unlock()
	snap := Snapshot{
		Clients:       s.clients.Load(),
		ParkedClients: s.parker.count(),
		PinnedTotal:   s.pinned.Load(),
		Panics:        s.panics.Load(),
		Draining:      s.isDraining(),
		MaxClientConn: s.Config().MaxClientConn,
	}
	if s.fleet != nil {
		st := s.fleet.Status()
		snap.Fleet = &st
	}
	byKey := make(map[poolKey]int, len(entries))
	for _, e := range entries {
		byKey[e.key()] = len(snap.Pools)
		pc := e.pool.Config()
		ps := PoolSnapshot{
			Database:    e.dbName,
			User:        e.pool.User(),
			Mode:        e.mode,
			Stat:        e.pool.Stat(),
			Size:        pc.Size,
			MinSize:     pc.MinSize,
			ReserveSize: pc.ReserveSize,
			Counters:    e.counters(),
		}
		if c, ok := carried[e.key()]; ok {
			ps.Counters.add(c.counters)
			ps.Stat = addCumulative(ps.Stat, c.stat)
		}
		if pc.DBLimit != nil {
			snap.DBLimits = addLimit(snap.DBLimits, e.dbName, pc.DBLimit)
		}
		if pc.UserLimit != nil {
			snap.UserLimits = addLimit(snap.UserLimits, ps.User, pc.UserLimit)
		}
		if e.monitor != nil {
			status := e.monitor.Status()
			ps.Primary = e.monitor.PrimaryStatus()
			for i, r := range e.replicas {
				rs := ReplicaSnapshot{Name: r.name, Stat: r.pool.Stat()}
				if i < len(status) {
					rs.Status = status[i]
				}
				ps.Replicas = append(ps.Replicas, rs)
			}
		}
		snap.Pools = append(snap.Pools, ps)
	}
	for _, ss := range sessions {
		if ss.admin {
			snap.AdminClients++
			continue
		}
		e := ss.poolEntry()
		if e == nil {
			continue
		}
		i, ok := byKey[e.key()]
		if !ok {
			continue // its pool was replaced by a reload
		}
		p := &snap.Pools[i]
		switch ss.clientState() {
		case clientWaiting:
			p.ClientsWaiting++
		case clientActive:
			p.ClientsActive++
		default:
			p.ClientsIdle++
		}
	}
	return snap
}

// addLimit records l under name once; pools sharing a cap share the Limit.
func addLimit(m map[string]pool.LimitStat, name string, l *pool.Limit) map[string]pool.LimitStat {
	if m == nil {
		m = make(map[string]pool.LimitStat)
	}
	if _, ok := m[name]; !ok {
		m[name] = l.Stat()
	}
	return m
}

// lists copies the pool entries (sorted by database, user) and the
// registered sessions (sorted by id).
func (s *Server) lists() ([]*poolEntry, []*session) {
	s.mu.Lock()
	entries := make([]*poolEntry, 0, len(s.pools))
	for _, e := range s.pools {
		entries = append(entries, e)
	}
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	slices.SortFunc(entries, func(a, b *poolEntry) int {
		return cmp.Or(cmp.Compare(a.dbName, b.dbName), cmp.Compare(a.pool.User(), b.pool.User()))
	})
	slices.SortFunc(sessions, func(a, b *session) int { return cmp.Compare(a.id, b.id) })
	return entries, sessions
}

func (e *poolEntry) key() poolKey { return poolKey{e.dbName, e.pool.User()} }

func (e *poolEntry) counters() PoolCounters {
	return PoolCounters{
		Transactions:     e.stats.xacts.Load(),
		Queries:          e.stats.queries.Load(),
		TransactionTime:  time.Duration(e.stats.xactTimeUS.Load()) * time.Microsecond,
		ClientParses:     e.stats.clientParses.Load(),
		ServerParses:     e.stats.serverParses.Load(),
		Binds:            e.stats.binds.Load(),
		ClientLogins:     e.stats.clientLogins.Load(),
		PinnedClients:    e.stats.pinnedClients.Load(),
		PumpedLoans:      e.stats.pumpedLoans.Load(),
		LoopEntries:      e.stats.loopEntries.Load(),
		LoopHandbacks:    e.stats.loopHandbacks.Load(),
		AbandonedCancels: e.stats.abandonedCancels.Load(),
		BytesReceived:    e.stats.recvBytes.Load(),
		BytesSent:        e.stats.sentBytes.Load(),
		QueryTime:        time.Duration(e.stats.queryTimeUS.Load()) * time.Microsecond,
	}
}

type clientState uint8

const (
	clientIdle clientState = iota
	clientActive
	clientWaiting
)

// clientState classifies a registered session for SHOW POOLS and metrics.
// Safe to call from any goroutine.
func (ss *session) clientState() clientState {
	if ss.has(stWaiting) {
		return clientWaiting
	}
	ss.mu.Lock()
	linked := ss.server != nil
	ss.mu.Unlock()
	if linked {
		return clientActive
	}
	return clientIdle
}
