package admin

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/lag"
)

// Backend is the pooler as the console sees it. Package router implements
// it. Its methods must be safe for concurrent use, do no I/O except where
// stated, and return values the console owns.
type Backend interface {
	// Config returns the configuration in force. The console only reads it.
	Config() *configs.Config
	// Started returns when the pooler started: the avg_* columns of SHOW
	// STATS average over its uptime.
	Started() time.Time
	// Draining reports whether pgferry has begun shutting down.
	Draining() bool
	// Snapshot returns the pools and the client counts.
	Snapshot() Snapshot
	// AuthUsers lists the users with a password of their own, from
	// auth_file or [users], in no order.
	AuthUsers() []string
	// Clients lists the logged-in clients, admin console clients
	// included, sorted by id.
	Clients() []ClientInfo
	// Servers lists the server connections lent to clients (by client id)
	// and those idle in the pools (by database, user). Connections pgferry
	// holds for itself (LISTEN connections, logins that learn server
	// parameters) are not listed.
	Servers() []ServerInfo
	// Pools returns the pools of database db, or every pool when db is "".
	// The set is fixed when Pools returns.
	Pools(db string) PoolSet
	// KillClients ends every client of database db (of every database
	// when db is ""), admin console clients excepted, and returns how many
	// it ended. It does not wait for them.
	KillClients(db string) int
	// KillClient ends the client with id id (ClientInfo.ID) and reports
	// whether there was one; admin console clients are not ended.
	KillClient(id uint64) bool
	// Reload re-reads the configuration file and applies it, returning why
	// it could not, or ErrNoAction when pgferry has no reload action. It
	// runs on the console's goroutine and may block.
	Reload() error
	// Shutdown starts a graceful shutdown and returns at once, or returns
	// ErrNoAction when pgferry has no shutdown action.
	Shutdown() error
	// PauseState returns the pooler's one PauseState, which every console
	// session shares.
	PauseState() *PauseState
}

// ErrNoAction is what Backend.Reload and Backend.Shutdown return when the
// program running pgferry installed no such action.
var ErrNoAction = errors.New("no action is configured")

// PoolSet is the pools a control command acts on: each (database, user)
// pool, with its primary's pool and its replicas' pools.
type PoolSet interface {
	// Len is the number of (database, user) pools in the set.
	Len() int
	// Paused counts the (database, user) pools whose primary's pool is
	// paused.
	Paused() int
	// Pause marks every pool paused (new borrowers wait, connections are
	// closed as they come back), then waits until none has a connection
	// lent or dialing, or until ctx ends, when it returns ctx.Err().
	// Calling it again is harmless.
	Pause(ctx context.Context) error
	// Resume ends a Pause of every pool.
	Resume()
	// Reconnect closes every pool's idle connections and marks the rest to
	// be closed when they come back.
	Reconnect()
	// CloseNeeded counts the open connections that predate a Reconnect,
	// and the logins begun before it that are still under way.
	CloseNeeded() int
}

// Session is the router session that owns the console's client
// connection. The console calls it only from that session's goroutine.
//
// Other goroutines interrupt the console's read of its client by setting a
// past read deadline (a KILL, or Shutdown waking sessions); the console
// then asks Killed and Backend.Draining what happened.
type Session interface {
	// Killed reports whether the session was killed (KILL, KILL_CLIENT).
	Killed() bool
	// ClearWake consumes a wake-up: it clears the read deadline that
	// interrupted the read, then the wake request, in that order, so that
	// a wake posted in between sets the deadline again.
	ClearWake()
}

// Snapshot is what SHOW POOLS, STATS, DATABASES, LISTS, STATE and REPLICAS
// report, taken at one moment. It holds plain values.
type Snapshot struct {
	// Clients counts connected client sockets, admin console clients and
	// clients still logging in included.
	Clients int64
	// AdminClients counts logged-in admin console clients.
	AdminClients int
	// Pools lists every (database, user) pool, sorted by database then
	// user.
	Pools []PoolInfo
}

// PoolInfo is one (database, user) pool.
type PoolInfo struct {
	// Database is the client-facing database name; User the server login
	// user; Mode the pool mode ("transaction" or "session").
	Database, User, Mode string
	// Stat is the primary's pool's snapshot.
	Stat pool.Stat
	// Counters are the pool's cumulative counters.
	Counters Counters
	// ClientsActive counts logged-in clients linked to a server
	// connection, ClientsWaiting those queued for one, ClientsIdle the rest.
	ClientsActive, ClientsWaiting, ClientsIdle int
	// Replicas are the database's read replicas, if any.
	Replicas []ReplicaInfo
}

// Counters are a pool's cumulative counters (PinnedClients excepted, which
// is a current count).
type Counters struct {
	// Transactions counts completed transactions; Queries the
	// ReadyForQuery messages seen (queries and Syncs).
	Transactions, Queries uint64
	// TransactionTime is how long server connections were linked;
	// QueryTime how long queries ran on servers.
	TransactionTime, QueryTime time.Duration
	// ClientParses counts named Parse messages from clients, ServerParses
	// those sent to servers, Binds the Bind messages, ClientLogins the
	// successful client logins.
	ClientParses, ServerParses, Binds, ClientLogins uint64
	// BytesReceived and BytesSent count client traffic.
	BytesReceived, BytesSent uint64
	// PinnedClients is the number of sessions pinned right now.
	PinnedClients int64
}

// ReplicaInfo is one read replica: its pool and the lag monitor's view.
type ReplicaInfo struct {
	// Name is host:port.
	Name   string
	Stat   pool.Stat
	Status lag.ReplicaStatus
}

// ClientInfo is one logged-in client, a row of SHOW CLIENTS.
type ClientInfo struct {
	// ID identifies the client (SHOW CLIENTS' ptr and id, KILL_CLIENT).
	ID             uint64
	User, Database string
	// Waiting is set while the client is queued for a server connection.
	Waiting bool
	// Login is set while the client is still logging in (its startup
	// packet read, its greeting not yet sent); only ID, User, Database,
	// Addr, LocalAddr, TLS and ConnectedAt are known then.
	Login bool
	// Linked is set while server connection Server is lent to the client.
	Linked bool
	Server uint64
	// Addr is the client's address as host:port; "" when unknown.
	Addr string
	// LocalAddr is pgferry's end of the client socket; nil when unknown.
	LocalAddr net.Addr
	// TLS is the TLS version and cipher; "" for a plain connection.
	TLS         string
	ConnectedAt time.Time
	// AppName is the application_name of the startup packet.
	AppName string
	// PreparedStatements counts the client's named prepared statements
	// (0 with max_prepared_statements = 0, which tracks none).
	PreparedStatements int
}

// ServerInfo is one server connection, a row of SHOW SERVERS.
type ServerInfo struct {
	// Database is the client-facing database name; User the server login
	// user.
	Database, User string
	Conn           pool.ConnInfo
	// Lent is set when the connection is lent to client Client; otherwise
	// it is idle in its pool.
	Lent   bool
	Client uint64
}
