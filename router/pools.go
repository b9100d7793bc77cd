// The pools a Server keeps per (database, user): how they are made from
// the configuration (server login, replicas, limits) and retired.

package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/lag"
	"github.com/pgferry/pgferry/router/notify"
)

type poolKey struct{ db, user string }

// poolStats are cumulative per-pool counters, updated once per transaction
// or query (never per message).
type poolStats struct {
	xacts         atomic.Uint64 // transactions completed (server released)
	queries       atomic.Uint64 // ReadyForQuery seen: queries and Syncs
	xactTimeUS    atomic.Uint64 // time servers were linked, microseconds
	clientParses  atomic.Uint64 // named Parse messages from clients
	serverParses  atomic.Uint64 // Parse messages sent to servers for named statements
	binds         atomic.Uint64 // Bind messages
	clientLogins  atomic.Uint64 // successful client logins
	pinnedClients atomic.Int64  // sessions currently pinned
	pumpedLoans   atomic.Uint64 // loans relayed by a pump goroutine
	loopEntries   atomic.Uint64 // sessions handed to the relay loop
	loopHandbacks atomic.Uint64 // sessions the relay loop handed back to a goroutine
	// abandonedCancels counts queries cancelled because their client
	// disconnected while they ran.
	abandonedCancels atomic.Uint64
	// recvBytes and sentBytes count client traffic (the clients' Readers
	// and Writers add to them); queryTimeUS the time queries ran, from the
	// first request after the server was idle to its ReadyForQuery.
	recvBytes, sentBytes atomic.Uint64
	queryTimeUS          atomic.Uint64
}

// poolEntry is one (database, user) pool and what sessions need with it.
type poolEntry struct {
	pool   *pool.Pool
	dbName string
	db     configs.Database
	mode   string
	// sizes are the size and the reserve the pool was built with
	// (poolSizes), which [users] may set apart from db.
	sizes [2]int
	// tlsDigest is the digest of the server TLS files the pool's dial
	// configuration was made from (serverTLS).
	tlsDigest tlsDigest

	// replicas and monitor exist when the database lists read replicas.
	replicas []replicaPool
	monitor  *lag.Monitor

	// stats are cumulative counters for SHOW STATS and metrics.
	stats poolStats

	// listen serves LISTEN/NOTIFY for the pool's clients; created on first
	// use. listenClosed: close ran, and a listener made after it starts
	// closed (see listenerFor). Guarded by listenMu.
	listenMu     sync.Mutex
	listen       *notify.Listener
	listenClosed bool

	// welcome holds the ParameterStatus set of the first server login,
	// replayed to new clients (as PgBouncer does); greeting is the same,
	// encoded, for the greeting to copy. Set once (setWelcome), guarded by
	// welcomeMu.
	welcomeMu sync.Mutex
	welcome   map[string]string
	greeting  *greeting

	// confirmed are the startup values the pool's servers accepted
	// (paramsconfirm.go).
	confirmed confirmedParams
}

// greeting is a welcome set in name order and its ParameterStatus frames,
// encoded once: frames[offs[i]:offs[i+1]] is params[i]'s frame.
type greeting struct {
	params []protocol.Param
	frames []byte
	offs   []int
}

func newGreeting(w map[string]string) *greeting {
	g := &greeting{params: make([]protocol.Param, 0, len(w)), offs: make([]int, 0, len(w)+1)}
	for k, v := range w {
		g.params = append(g.params, protocol.Param{Key: k, Value: v})
	}
	slices.SortFunc(g.params, func(a, b protocol.Param) int { return strings.Compare(a.Key, b.Key) })
	for _, p := range g.params {
		g.offs = append(g.offs, len(g.frames))
		g.frames = protocol.AppendParameterStatus(g.frames, p.Key, p.Value)
	}
	g.offs = append(g.offs, len(g.frames))
	return g
}

// appendTo appends the greeting's frames, with the client's own value of
// each parameter it set (lookup) in place of the servers'.
func (g *greeting) appendTo(out []byte, lookup func(string) (string, bool)) []byte {
	from := 0 // the first frame not appended yet
	for i, p := range g.params {
		if v, ok := lookup(p.Key); ok && v != p.Value {
			out = append(out, g.frames[g.offs[from]:g.offs[i]]...)
			out = protocol.AppendParameterStatus(out, p.Key, v)
			from = i + 1
		}
	}
	return append(out, g.frames[g.offs[from]:]...)
}

// setWelcome records w as the entry's server parameter set unless one is
// recorded already, and returns the entry's set and its greeting.
func (e *poolEntry) setWelcome(w map[string]string) (map[string]string, *greeting) {
	e.welcomeMu.Lock()
	defer e.welcomeMu.Unlock()
	if e.welcome == nil && w != nil {
		e.welcome, e.greeting = w, newGreeting(w)
	}
	return e.welcome, e.greeting
}

// detachedServers reports whether a pool dials its servers out of Go's
// netpoller (pool.DialConfig.Detached): those of the pools the relay loop
// may serve (transaction mode, no replicas) while the configuration lets
// it serve sessions (loopConfig). Only those: a goroutine that borrows a
// detached server waits for it in Go's netpoller through an epoll set of
// the connection's own (sockio.FDConn), which costs two or three system
// calls per wait that a socket in the netpoller does not. A reload that
// changes it for a pool rebuilds that pool.
func detachedServers(cfg *configs.Config, db configs.Database, user string) bool {
	return loopBuilt && inlineRelay && sockio.Available && sockio.DetachAvailable &&
		loopConfig(cfg) && len(db.Replicas) == 0 &&
		poolModeFor(cfg, db, user) == poolModeTransaction
}

// loopConfig reports whether the configuration lets the relay loop serve
// sessions: relay_loop is on, none of the timeouts the loop does not arm
// is set, and clients may connect without TLS or this process takes TLS
// 1.3 connections over (internal/tls13: the loop serves the records it
// carries; clients with TLS 1.2 stay on goroutines, see loopable).
func loopConfig(cfg *configs.Config) bool {
	return cfg.RelayLoop && cfg.QueryTimeout == 0 && cfg.TransactionTimeout == 0 &&
		cfg.ClientIdleTimeout == 0 && cfg.IdleTransactionTimeout == 0 &&
		(!cfg.ClientTLSRequired() || tls13.Usable())
}

// poolSettings fingerprints the global settings that existing pools were
// built with; when they change on reload, pools are rebuilt.
func poolSettings(c *configs.Config) string {
	return fmt.Sprint(c.ServerLifetime, c.ServerIdleTimeout, c.ServerConnectTimeout, c.ServerLoginRetry, c.OutageHoldTimeout, c.ServerCheckDelay, c.ServerCheckQuery,
		c.ReservePoolTimeout, c.MaxPreparedStatements, c.MaxUserConnections, c.ServerTLSCertFile,
		c.ServerTLSKeyFile, c.ServerTLSCAFile, c.ServerTLSSSLMode, c.ServerTLSProtocols, c.ServerTLSCiphers, c.PoolMode, c.DefaultPoolSize)
}

func sameDatabase(a, b configs.Database) bool {
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b) && a.Password.Reveal() == b.Password.Reveal()
}

// poolSizes returns the size and the reserve of the pool of db for the
// server login user user: the user's pool_size and reserve_pool_size where
// [users] sets them, as PgBouncer's pool_pool_size and pool_res_pool_size
// take them before the database's, else the database's.
func poolSizes(cfg *configs.Config, db configs.Database, user string) (size, reserve int) {
	size, reserve = db.PoolSize, db.ReservePool
	if size == 0 {
		size = cfg.DefaultPoolSize
	}
	if u, ok := cfg.Users[user]; ok {
		if u.PoolSize != nil {
			size = *u.PoolSize
		}
		if u.ReservePoolSize != nil {
			reserve = *u.ReservePoolSize
		}
	}
	return size, reserve
}

// userCaps returns the max_user_connections and fleet_max_user_connections
// in force for user: its own where [users] sets them, else the globals.
func userCaps(cfg *configs.Config, user string) (maxUser, fleetUser int) {
	maxUser, fleetUser = cfg.MaxUserConnections, cfg.FleetMaxUserConnections
	if u, ok := cfg.Users[user]; ok {
		if u.MaxUserConnections > 0 {
			maxUser = u.MaxUserConnections
		}
		if u.FleetMaxUserConnections > 0 {
			fleetUser = u.FleetMaxUserConnections
		}
	}
	return maxUser, fleetUser
}

// userCapsChanged reports whether user's caps differ between the
// configurations a and b.
func userCapsChanged(a, b *configs.Config, user string) bool {
	am, af := userCaps(a, user)
	bm, bf := userCaps(b, user)
	return am != bm || af != bf
}

// dbCaps returns the max_db_connections and fleet_max_db_connections of
// database entry name in cfg, and whether cfg has it.
func dbCaps(cfg *configs.Config, name string) (maxDB, fleetDB int, ok bool) {
	db, _, ok := cfg.LookupDatabase(name)
	return db.MaxDBConnections, db.FleetMaxDBConnections, ok
}

// userSizesChanged reports whether e's pool was built with another size or
// reserve than cfg gives it now, which a change of [users] alone makes.
func userSizesChanged(e *poolEntry, cfg *configs.Config, db configs.Database, user string) bool {
	size, reserve := poolSizes(cfg, db, user)
	return e.sizes != [2]int{size, reserve}
}

func poolModeFor(cfg *configs.Config, db configs.Database, user string) string {
	if u, ok := cfg.Users[user]; ok && u.PoolMode != "" {
		return u.PoolMode
	}
	if db.PoolMode != "" {
		return db.PoolMode
	}
	return cfg.PoolMode
}

// poolFor returns the pool for (database entry, server user), creating it.
// db is the database entry as cfg has it, the configuration the caller
// read it from, which a reload may have replaced since.
func (s *Server) poolFor(cfg *configs.Config, dbName string, db configs.Database, user string, clientPassword string) (*poolEntry, error) {
	key := poolKey{dbName, user}
	s.mu.Lock()
	if e, ok := s.pools[key]; ok {
		s.mu.Unlock()
		return e, nil
	}
	s.mu.Unlock()
	// The names may be substrings of a client's startup packet
	// (protocol.ParseStartup): a pool lives on, the packet need not.
	dbName, user = strings.Clone(dbName), strings.Clone(user)
	for {
		e, err := s.newPool(cfg, dbName, db, user, clientPassword)
		if err != errReloaded {
			return e, err
		}
		// A reload came between: its look at the pools may have missed
		// this one, so it is built again from the new configuration, as
		// the reload would have rebuilt it.
		cfg = s.cfg.Load()
		var ok bool
		if db, _, ok = cfg.LookupDatabase(dbName); !ok {
			return nil, protocol.Fatal(protocol.SQLStateInvalidCatalogName, "no such database: "+dbName+" (removed by a reload)")
		}
	}
}

// errReloaded says that newPool's configuration was replaced while it
// built the pool: it did not keep it.
var errReloaded = errors.New("the configuration was reloaded")

// newPool builds and registers the pool for (dbName, user) from cfg, or
// returns the one registered meanwhile. It returns errReloaded, keeping
// nothing, if cfg is no longer the server's configuration when it would
// register it: Reload swaps the configuration in before it looks at the
// pools, under the same lock.
func (s *Server) newPool(cfg *configs.Config, dbName string, db configs.Database, user string, clientPassword string) (*poolEntry, error) {
	key := poolKey{dbName, user}
	dial, digest, err := s.dialConfig(cfg, dbName, db, user, clientPassword)
	if err != nil {
		return nil, err
	}
	size, reserve := poolSizes(cfg, db, user)
	pc := pool.Config{
		Database:       dbName,
		User:           user,
		Dial:           *dial,
		Size:           size,
		MinSize:        min(db.MinPoolSize, size),
		ReserveSize:    reserve,
		ReserveTimeout: cfg.ReservePoolTimeout.Std(),
		Lifetime:       serverLifetime(cfg),
		IdleTimeout:    cfg.ServerIdleTimeout.Std(),
		LoginRetry:     cfg.ServerLoginRetry.Std(),
		HoldTimeout:    holdTimeout(cfg),
		MaxPrepared:    cfg.MaxPreparedStatements,
		CheckDelay:     checkDelay(cfg),
		CheckQuery:     cfg.ServerCheckQuery,
	}
	pc.Dial.Detached = detachedServers(cfg, db, user)
	pc.Hooks = outageLog{log: s.log, database: dbName}
	if s.opts.Hooks != nil {
		pc.Hooks = outageLog{Hooks: s.opts.Hooks.PoolHooks(dbName, user), log: s.log, database: dbName}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.pools[key]; ok {
		return e, nil
	}
	if s.draining.Load() {
		return nil, errDraining
	}
	if s.cfg.Load() != cfg {
		return nil, errReloaded
	}
	if db.MaxDBConnections > 0 || db.FleetMaxDBConnections > 0 {
		if s.dbLimits[dbName] == nil {
			s.dbLimits[dbName] = s.fleetLimit("db/"+dbName, db.MaxDBConnections, db.FleetMaxDBConnections)
		}
		pc.DBLimit = s.dbLimits[dbName]
	}
	if maxUser, fleetUser := userCaps(cfg, user); maxUser > 0 || fleetUser > 0 {
		if s.userLimits[user] == nil {
			s.userLimits[user] = s.fleetLimit("user/"+user, maxUser, fleetUser)
		}
		pc.UserLimit = s.userLimits[user]
	}
	e := &poolEntry{pool: pool.New(pc), dbName: dbName, db: db, mode: poolModeFor(cfg, db, user), sizes: [2]int{size, reserve}, tlsDigest: digest}
	if len(db.Replicas) > 0 {
		s.addReplicas(e, pc)
	}
	if s.adminPause.Holds(dbName) {
		// Made during a PAUSE (of the whole pooler, or of dbName on its
		// own, or KILL's): it holds its clients as the pools paused then
		// do, until RESUME. Marked before it is listed, so nobody borrows
		// before; a new pool has nothing to drain.
		pauseMarked(e)
	}
	s.pools[key] = e
	return e, nil
}

// aliasTarget returns the database entry whose readonly_alias is name.
func aliasTarget(cfg *configs.Config, name string) string {
	for n, db := range cfg.Databases {
		if db.ReadOnlyAlias == name {
			return n
		}
	}
	return name
}

// replicaPool is one read replica's pool.
type replicaPool struct {
	name   string // host:port, for logs, metrics and the admin console
	pool   *pool.Pool
	weight int
}

// addReplicas creates a pool per replica and the lag monitor that decides
// which are in rotation. pc is the primary's pool config.
// outageLog logs the end of a server outage (and passes every observation
// on to Hooks, when set): when the server was back, and how long it had been
// away as pgferry saw it.
type outageLog struct {
	pool.Hooks
	log      *zap.Logger
	database string
}

func (o outageLog) WaitObserved(d time.Duration) {
	if o.Hooks != nil {
		o.Hooks.WaitObserved(d)
	}
}

func (o outageLog) LoginObserved(d time.Duration, err error) {
	if o.Hooks != nil {
		o.Hooks.LoginObserved(d, err)
	}
}

func (o outageLog) OutageEnded(d time.Duration) {
	o.log.Info("server reachable again; held clients are being served",
		zap.String("database", o.database), zap.Duration("outage", d))
	if o.Hooks != nil {
		o.Hooks.OutageEnded(d)
	}
}

// authFilePassword logs in to the server with the server user's auth_file
// (or [users]) password, when the database entry has none.
type authFilePassword struct {
	srv      *Server
	user     string
	database string // the pool's database: auth_query's lookups for its clients answer md5
}

func (a authFilePassword) Password(context.Context) (string, error) {
	cred, ok := a.srv.store.Load().Lookup(a.user)
	if !ok {
		return "", fmt.Errorf("the server asked for a password but none is configured for user %q (not in the database entry, auth_file or [users])", a.user)
	}
	if pw, ok := cred.Plaintext(); ok {
		return pw, nil
	}
	if cred.Kind() == auth.KindSCRAM {
		return "", fmt.Errorf("the auth_file entry of user %q is a SCRAM secret: pgferry logs in to the server with it only by SCRAM pass-through, once a client has logged in with SCRAM against it, and only to a server asking for SCRAM with the same secret; give the database entry a password, or auth_file a plain-text one", a.user)
	}
	return "", fmt.Errorf("the auth_file entry of user %q is a hash, which can answer a server's md5 challenge but not a cleartext or SCRAM one; give the database entry a password, or auth_file a plain-text one", a.user)
}

// SCRAMKeys are the keys the user's last SCRAM login against its auth_file
// SCRAM secret proved (pool.SCRAMKeySource): SCRAM pass-through, as
// PgBouncer does. They are used only while the auth_file still holds that
// secret.
func (a authFilePassword) SCRAMKeys() (auth.SCRAMKeys, bool) {
	v, ok := a.srv.passKeys.Load(a.user)
	if !ok {
		return auth.SCRAMKeys{}, false
	}
	pk := v.(*passKeys)
	cred, ok := a.srv.store.Load().Lookup(a.user)
	if ok && !cred.Same(pk.cred) {
		return auth.SCRAMKeys{}, false // auth_file holds another secret now
	}
	// From auth_file, or looked up with auth_query: a server holding
	// another secret refuses the keys before any proof is sent.
	return pk.keys, true
}

// passKeys are SCRAM pass-through keys and the credential they came from.
type passKeys struct {
	cred auth.Credential
	keys auth.SCRAMKeys
}

// MD5Hash answers a server's md5 challenge from an md5 auth_file entry
// (pool.MD5HashSource), as PgBouncer does.
func (a authFilePassword) MD5Hash() (string, bool) {
	cred, ok := a.srv.store.Load().Lookup(a.user)
	if !ok {
		r, found := a.srv.cachedAuthQuery(a.srv.cfg.Load(), a.database, a.user)
		if !found || !r.known {
			return "", false
		}
		cred = r.cred
	}
	return cred.MD5Hash()
}

func (a authFilePassword) String() string { return "[redacted]" }

// checkDelay maps server_check_delay to the pool's: PgBouncer's 0 checks
// before every loan.
func checkDelay(cfg *configs.Config) time.Duration {
	if d := cfg.ServerCheckDelay.Std(); d > 0 {
		return d
	}
	return pool.CheckAlways
}

// serverLifetime maps server_lifetime to the pool's: PgBouncer's 0 uses
// each connection for one loan.
func serverLifetime(cfg *configs.Config) time.Duration {
	if d := cfg.ServerLifetime.Std(); d > 0 {
		return d
	}
	return pool.UseOnce
}

// holdTimeout is outage_hold_timeout, bounded by query_wait_timeout.
func holdTimeout(cfg *configs.Config) time.Duration {
	d, qw := cfg.OutageHoldTimeout.Std(), cfg.QueryWaitTimeout.Std()
	if qw > 0 && qw < d {
		d = qw
	}
	return d
}

func (s *Server) addReplicas(e *poolEntry, pc pool.Config) {
	var targets []lag.Replica
	for _, r := range e.db.Replicas {
		rc := pc
		rc.Dial.Hosts = []string{r.Host}
		rc.Dial.Port = r.Port
		rc.Dial.RequireWritable = false
		rc.DBLimit, rc.UserLimit = nil, nil
		rc.MinSize = 0
		rc.HoldTimeout = 0 // a read falls back to the primary instead of waiting
		name := net.JoinHostPort(r.Host, strconv.Itoa(r.Port))
		if s.opts.Hooks != nil {
			rc.Hooks = s.opts.Hooks.PoolHooks(e.dbName, pc.User)
		}
		e.replicas = append(e.replicas, replicaPool{name: name, pool: pool.New(rc), weight: r.Weight})
		targets = append(targets, lag.Replica{Name: name, Dial: rc.Dial, Weight: r.Weight})
	}
	e.monitor = lag.New(lag.Config{
		Primary:     pc.Dial,
		Replicas:    targets,
		MaxLagBytes: e.db.MaxReplicaLagBytes,
		MaxLag:      e.db.MaxReplicaLag.Std(),
		Interval:    e.db.LagCheckInterval.Std(),
		Logger:      s.log.With(zap.String("database", e.dbName)),
	})
	e.monitor.Start()
}

// close stops everything the entry owns: the lag monitor, the listener and
// every pool. Connections still lent out close when they are returned.
func (e *poolEntry) close() {
	if e.monitor != nil {
		e.monitor.Close()
	}
	e.listenMu.Lock()
	l := e.listen
	e.listenClosed = true
	e.listenMu.Unlock()
	if l != nil {
		l.Close()
	}
	var wg sync.WaitGroup
	for _, p := range append([]*pool.Pool{e.pool}, e.replicaPools()...) {
		wg.Add(1)
		go func() { defer wg.Done(); p.Close() }()
	}
	wg.Wait()
}

// drained reports whether every pool of a closed entry has closed all its
// connections, lent ones included.
func (e *poolEntry) drained() bool {
	if !e.pool.Drained() {
		return false
	}
	for _, r := range e.replicas {
		if !r.pool.Drained() {
			return false
		}
	}
	return true
}

// allPools returns the entry's primary pool and its replica pools.
func (e *poolEntry) allPools() []*pool.Pool {
	return append([]*pool.Pool{e.pool}, e.replicaPools()...)
}

func (e *poolEntry) replicaPools() []*pool.Pool {
	out := make([]*pool.Pool, len(e.replicas))
	for i, r := range e.replicas {
		out[i] = r.pool
	}
	return out
}

func (s *Server) dialConfig(cfg *configs.Config, dbName string, db configs.Database, user, clientPassword string) (*pool.DialConfig, tlsDigest, error) {
	var pw pool.PasswordSource
	switch {
	case s.opts.PasswordSource != nil && db.Auth == "entra":
		src, err := s.opts.PasswordSource(dbName, db)
		if err != nil {
			return nil, tlsDigest{}, err
		}
		pw = src
	case db.Password.Reveal() != "":
		pw = pool.StaticPassword(db.Password.Reveal())
	case clientPassword != "":
		pw = pool.StaticPassword(clientPassword)
	default:
		// As PgBouncer does: the server login uses the user's own entry in
		// auth_file (or [users]), read at each login so a reload applies.
		pw = authFilePassword{srv: s, user: user, database: dbName}
	}
	dc := &pool.DialConfig{
		Port:           db.Port,
		Database:       db.DBName,
		User:           user,
		Password:       pw,
		SSLMode:        db.SSLMode,
		AllowCleartext: db.AllowCleartextPassword,
		ConnectTimeout: cfg.ServerConnectTimeout.Std(),
		Resolver:       &net.Resolver{},
	}
	if dc.Database == "" {
		dc.Database = dbName
	}
	for _, h := range strings.Split(db.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			dc.Hosts = append(dc.Hosts, h)
		}
	}
	// A primary that reports in_hot_standby=on receives no writes; with
	// several hosts this finds the writable one (target_session_attrs).
	dc.RequireWritable = true
	tc, digest, err := serverTLS(cfg, dbName, db)
	if err != nil {
		return nil, tlsDigest{}, err
	}
	dc.TLS = tc
	return dc, digest, nil
}

// Reconnect makes every server connection of database db ("" = all) close
// when next released, so new logins pick up rotated credentials or moved
// hosts, as the admin console's RECONNECT does.
func (s *Server) Reconnect(db string) {
	s.mu.Lock()
	var entries []*poolEntry
	for k, e := range s.pools {
		if db == "" || k.db == db {
			entries = append(entries, e)
		}
	}
	s.mu.Unlock()
	for _, e := range entries {
		for _, p := range e.allPools() {
			p.Reconnect()
		}
	}
}
