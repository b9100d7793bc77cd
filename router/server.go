package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/auth/hba"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/admin"
	"github.com/pgferry/pgferry/router/fleet"
	"github.com/pgferry/pgferry/router/peers"
	"github.com/pgferry/pgferry/router/prepared"
)

// Options carries what the Server needs besides its configuration.
type Options struct {
	// Logger receives lifecycle and per-session events; nil means no logs.
	Logger *zap.Logger
	// Hooks observe the router (metrics); nil means none.
	Hooks Hooks
	// PasswordSource returns the server login password source for a
	// database entry; nil uses the entry's static password. cmd wires Entra
	// ID token sources through it.
	PasswordSource func(dbName string, db configs.Database) (pool.PasswordSource, error)
	// EntraHTTPClient fetches the discovery documents and signing keys
	// that client Entra token checks need; nil uses a default TLS client.
	// Tests point it at a fake issuer.
	EntraHTTPClient *http.Client
	// PeerResolver resolves peers_dns and peer host names; nil is the
	// system's resolver. Tests point it at a DNS server they control.
	PeerResolver *net.Resolver
	// StatementHash, for tests, replaces the hash that finds candidate
	// prepared statements (prepared.NewRegistry); nil is the default.
	StatementHash func([]byte) uint64
}

// Hooks observe the router. Implementations must be cheap and safe for
// concurrent use; pool.Hooks are taken from PoolHooks for each new pool.
type Hooks interface {
	// ClientRejected counts a refused client connection by reason
	// ("max_client_conn", "auth", "tls", "allow_cidrs", "hba", "protocol").
	ClientRejected(reason string)
	// PoolHooks returns the pool.Hooks for a new pool.
	PoolHooks(database, user string) pool.Hooks
}

// Server is pgferry's client-facing proxy. Create it with New, bind with
// Listen, run Serve, and stop with Shutdown. Safe for concurrent use.
type Server struct {
	log  *zap.Logger
	opts Options
	cfg  atomic.Pointer[configs.Config]
	// loopOK is loopConfig(cfg), stored with it: the relay loop asks at
	// every request.
	loopOK atomic.Bool
	store  atomic.Pointer[auth.Store]
	hba    atomic.Pointer[hba.Rules]    // auth_hba_file's rules; nil unless auth_type is "hba"
	entra  atomic.Pointer[entraClients] // client Entra token logins; nil unless client_auth = "entra" is used
	ctls   atomic.Pointer[clientTLS]    // client-facing TLS; nil: refuse SSL
	cidrs  atomic.Pointer[[]*net.IPNet]
	hooks  atomic.Pointer[AdminHooks] // RELOAD and SHUTDOWN of the admin console

	ids     atomic.Uint64
	clients atomic.Int64 // connected client sockets (admin included)
	pinned  atomic.Int64 // sessions ever pinned to a server by session state (cumulative)
	panics  atomic.Int64 // panics recovered in sessions (cumulative; see panicked)

	// refusing counts clients being turned away that are still in their
	// short negotiation (see refusal); above maxRefusing the rest are told
	// at once without reading anything.
	refusing atomic.Int64

	// mu guards the maps and listeners below. No I/O runs under it.
	mu         sync.Mutex
	pools      map[poolKey]*poolEntry
	dbLimits   map[string]*pool.Limit
	userLimits map[string]*pool.Limit
	retired    []*poolEntry // entries a reload replaced, until their loans end (budgetWatch.scan)
	// carried holds, per (database, user), the cumulative counters of the
	// pools a reload replaced, which Snapshot adds to the live pool's, so
	// that SHOW STATS and the metrics' counters do not go back to 0
	// when a pool is rebuilt.
	carried    map[poolKey]*carriedCounters
	sessions   map[uint64]*session
	logins     map[uint64]*session // clients logging in, which kills reach (loginkill.go)
	cancelKeys map[uint64]*session
	listeners  []net.Listener
	draining   atomic.Bool // set under mu; read without it on every client read

	wg          sync.WaitGroup // accept loops and sessions
	pumps       pumpWorkers    // relay goroutines kept between transactions
	parker      parker         // idle sessions held without a goroutine
	budget      budgetWatch    // interrupts inline relays past inlineBudget
	tracked     atomic.Pointer[trackedKeys]
	stmts       *prepared.Registry // clients' named statements by content
	peers       peers.Set          // peers_dns answers
	fleet       *fleet.Fleet       // fleet-wide connection budgets; nil without one
	passKeys    sync.Map           // user -> *passKeys: SCRAM pass-through
	authQueries authQueryCache     // auth_query results
	throttle    *authThrottle
	started     time.Time
	adminPause  admin.PauseState // what the admin console's PAUSE and KILL paused

	// cut ends at shutdown's deadline (cutLogins), and with it the waits
	// for a server of clients still logging in (waitContext) and their
	// auth_query lookups (lookupUser), which are not sessions a kill
	// reaches yet.
	cut       context.Context
	cutLogins context.CancelFunc
}

// New validates what the configuration references (auth file, TLS files)
// and returns a Server that is not yet listening.
func New(cfg *configs.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Server{
		log:        opts.Logger,
		opts:       opts,
		pools:      make(map[poolKey]*poolEntry),
		dbLimits:   make(map[string]*pool.Limit),
		userLimits: make(map[string]*pool.Limit),
		sessions:   make(map[uint64]*session),
		logins:     make(map[uint64]*session),
		cancelKeys: make(map[uint64]*session),
		throttle:   newAuthThrottle(cfg.AuthFailureDelay.Std()),
		pumps:      pumpWorkers{maxIdle: pumpIdleWorkers},
		stmts:      prepared.NewRegistry(opts.StatementHash),
		started:    time.Now(),
	}
	s.parker.srv = s
	s.cut, s.cutLogins = context.WithCancel(context.Background())
	if cfg.FleetBudgets() {
		s.fleet = s.newFleet(cfg)
	}
	s.budget.srv = s
	if err := s.apply(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Config returns the configuration in force.
func (s *Server) Config() *configs.Config { return s.cfg.Load() }

// apply loads what cfg references and publishes it. On error nothing
// changes.
func (s *Server) apply(cfg *configs.Config) error {
	creds := make(map[string]auth.Credential)
	if cfg.AuthFile != "" {
		m, err := auth.LoadUserlist(cfg.AuthFile)
		if err != nil {
			return fmt.Errorf("auth_file: %w", err)
		}
		creds = m
	}
	for name, u := range cfg.Users {
		if u.Password.Reveal() == "" {
			continue
		}
		c, err := auth.ParseCredential(name, u.Password.Reveal())
		if err != nil {
			return fmt.Errorf("users.%s.password: %w", name, err)
		}
		creds[name] = c
	}
	var ctls *tls.Config
	var hash []byte
	if cfg.ClientTLSSSLMode != "disable" && cfg.ClientTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.ClientTLSCertFile, cfg.ClientTLSKeyFile)
		if err != nil {
			return fmt.Errorf("client_tls_cert_file: %w", err)
		}
		// No session tickets: PostgreSQL clients do not resume TLS
		// sessions, and crypto/tls would send them under the application
		// keys inside the handshake, which internal/tls13 takes over
		// from sequence number 0.
		minV, maxV, err := configs.TLSVersions(cfg.ClientTLSProtocols)
		if err != nil {
			return fmt.Errorf("client_tls_protocols: %w", err)
		}
		// ALPN "postgresql", as PostgreSQL 17 offers it: required of a
		// client that starts TLS directly (directTLS); one that asks for
		// another protocol is refused by crypto/tls (RFC 7301's
		// no_application_protocol alert), as by PostgreSQL and PgBouncer.
		suites, err := configs.TLSCipherSuites(cfg.ClientTLSCiphers)
		if err != nil {
			return fmt.Errorf("client_tls_ciphers: %w", err)
		}
		curves, err := configs.TLSCurves(cfg.ClientTLSECDHCurve)
		if err != nil {
			return fmt.Errorf("client_tls_ecdhcurve: %w", err)
		}
		ctls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: minV, MaxVersion: maxV, CipherSuites: suites,
			CurvePreferences: curves, SessionTicketsDisabled: true, NextProtos: []string{alpnPostgreSQL}}
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			hash = auth.ChannelBindingHash(leaf)
		}
		if cfg.ClientTLSCAFile != "" {
			pem, err := os.ReadFile(cfg.ClientTLSCAFile)
			if err != nil {
				return fmt.Errorf("client_tls_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("client_tls_ca_file: no certificates in %s", cfg.ClientTLSCAFile)
			}
			ctls.ClientCAs = pool
			// Below verify-ca a certificate is optional but, when given,
			// verified, as in PgBouncer (sbuf.c setup_tls): hba cert lines
			// can then apply to some TLS clients and not others.
			ctls.ClientAuth = tls.VerifyClientCertIfGiven
			switch cfg.ClientTLSSSLMode {
			case "verify-ca", "verify-full":
				ctls.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
	}
	if ctls != nil {
		ctls = tls13.ServerConfig(ctls) // TLS 1.3 handshakes run over a tls13.Tap
	}
	// The files of the TLS towards servers are read when a pool is made;
	// they must load now, as the client's do: a start or reload with one
	// that does not is refused, as PgBouncer refuses it (sbuf_tls_setup).
	if _, err := serverTLSDigests(cfg); err != nil {
		return err
	}
	var rules *hba.Rules
	if cfg.AuthType == "hba" {
		// Read on every apply, so a reload re-reads the file like auth_file.
		var err error
		if rules, err = hba.Load(cfg.AuthHBAFile); err != nil {
			return fmt.Errorf("auth_hba_file: %w", err)
		}
		for _, ru := range rules.All() {
			if ru.Method == hba.MethodCert && (ctls == nil || ctls.ClientCAs == nil) {
				return fmt.Errorf("auth_hba_file: %s:%d: method cert needs client TLS (client_tls_sslmode not \"disable\") and client_tls_ca_file to verify client certificates", ru.File, ru.Line)
			}
		}
	}
	ec, err := newEntraClients(cfg, s.entra.Load(), s.opts.EntraHTTPClient)
	if err != nil {
		return err
	}
	var cidrs []*net.IPNet
	for _, c := range cfg.AllowCIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return fmt.Errorf("allow_cidrs: %w", err)
		}
		cidrs = append(cidrs, n)
	}
	s.store.Store(auth.NewStore(creds))
	s.hba.Store(rules)
	s.entra.Store(ec)
	if ctls != nil {
		s.ctls.Store(&clientTLS{ctls, hash})
	} else {
		s.ctls.Store(nil)
	}
	s.cidrs.Store(&cidrs)
	s.cfg.Store(cfg)
	s.loopOK.Store(loopConfig(cfg))
	return nil
}

// Reload swaps in a new configuration. Pools whose database entry changed
// are rebuilt (sessions keep the server they hold; new transactions use the
// new pool); connected clients are not dropped, except listening clients of
// a rebuilt database, whose LISTENs end with the old pools' listener. Settings that need a restart
// are rejected, and on any error the old configuration stays in force.
func (s *Server) Reload(cfg *configs.Config) error {
	old := s.cfg.Load()
	if keys := configs.RestartOnlyChanges(old, cfg); len(keys) > 0 {
		return fmt.Errorf("reload cannot change %s; restart pgferry instead", strings.Join(keys, ", "))
	}
	if err := s.apply(cfg); err != nil {
		return err
	}
	globalsChanged := poolSettings(old) != poolSettings(cfg)
	// (Read before the lock. Files that stopped loading since apply read
	// them are left out: their pools keep the files they read.)
	digests, _ := serverTLSDigests(cfg)
	s.throttle.setBase(cfg.AuthFailureDelay.Std())
	s.mu.Lock()
	if globalsChanged {
		// Shared caps are rebuilt with the pools that use them.
		s.dbLimits = make(map[string]*pool.Limit)
		s.userLimits = make(map[string]*pool.Limit)
	} else {
		// So is a database's or a user's cap the reload changed: the
		// pools under it are rebuilt below (a changed database entry,
		// userCapsChanged), and the new ones must not take the old cap.
		for name := range s.dbLimits {
			oldMax, oldFleet, _ := dbCaps(old, name)
			newMax, newFleet, ok := dbCaps(cfg, name)
			if !ok || oldMax != newMax || oldFleet != newFleet {
				delete(s.dbLimits, name)
			}
		}
		for user := range s.userLimits {
			if userCapsChanged(old, cfg, user) {
				delete(s.userLimits, user)
			}
		}
	}
	var stale []*poolEntry
	for k, e := range s.pools {
		db, _, ok := cfg.LookupDatabase(k.db)
		if globalsChanged || !ok || !sameDatabase(db, e.db) || e.mode != poolModeFor(cfg, db, k.user) ||
			e.pool.Config().Dial.Detached != detachedServers(cfg, db, k.user) || serverTLSChanged(db, e.tlsDigest, digests) ||
			userSizesChanged(e, cfg, db, k.user) || userCapsChanged(old, cfg, k.user) {
			stale = append(stale, e)
			delete(s.pools, k)
			if ok {
				s.carry(k, e)
			} else {
				delete(s.carried, k) // a database that comes back starts afresh
			}
		}
	}
	// Loans of stale entries run on: the inline budget keeps watching them
	// (budgetWatch.scan also prunes the list, but only while it runs).
	s.retired = append(slices.DeleteFunc(s.retired, (*poolEntry).drained), stale...)
	s.mu.Unlock()
	for _, e := range stale {
		// Sessions still holding a connection of e's pools return it to a
		// closed pool, which closes it.
		s.wg.Add(1)
		go func() { defer s.wg.Done(); e.close() }()
	}
	s.log.Info("configuration reloaded", zap.Int("pools_rebuilt", len(stale)))
	return nil
}

func (s *Server) isDraining() bool { return s.draining.Load() }

// Shutdown stops accepting clients, lets sessions finish the transaction
// they are in, closes sessions as they become idle, and after ctx ends cuts
// the rest. It then closes every pool and returns the number of sessions
// that were cut.
func (s *Server) Shutdown(ctx context.Context) int {
	s.mu.Lock()
	s.draining.Store(true)
	ls := s.listeners
	s.listeners = nil
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	if s.fleet != nil {
		// Peers count what this instance still holds until it is closed.
		s.fleet.Leave()
	}
	closeAll(ls)
	for _, ss := range sessions {
		ss.wake()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	cut := 0
	select {
	case <-done:
	case <-ctx.Done():
		s.cutLogins()
		var running []killedQuery
		s.mu.Lock()
		for _, ss := range s.sessions {
			if sc := ss.kill(evKillShutdown); sc != nil {
				running = append(running, killedQuery{ss, sc})
			}
			cut++
		}
		logins := s.loginsLocked()
		s.mu.Unlock()
		// Outside mu: a login on the relay loop ends in its kill, which
		// takes mu (unregisterLogin).
		for _, ss := range logins {
			ss.kill(evKillShutdown) // (no server: nothing runs)
			cut++
		}
		cancelKilled(running)
		<-done
	}
	s.mu.Lock()
	entries := make([]*poolEntry, 0, len(s.pools))
	for _, e := range s.pools {
		entries = append(entries, e)
	}
	s.pools = map[poolKey]*poolEntry{}
	s.retired = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Add(1)
		go func() { defer wg.Done(); e.close() }()
	}
	wg.Wait()
	if s.fleet != nil {
		s.fleet.Stop() // after the pools: its last report says nothing is open
	}
	s.cutLogins()
	s.parker.close()
	s.budget.close()
	s.pumps.close()
	s.log.Info("shut down", zap.Int("sessions_cut", cut))
	return cut
}

var errDraining = protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")

func (s *Server) register(ss *session) {
	s.mu.Lock()
	delete(s.logins, ss.id) // (in one step: a kill finds it in one or the other)
	s.sessions[ss.id] = ss
	s.cancelKeys[uint64(ss.pid)<<32|uint64(ss.key)] = ss
	s.mu.Unlock()
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.id)
	delete(s.cancelKeys, uint64(ss.pid)<<32|uint64(ss.key))
	s.mu.Unlock()
}

// eachSession calls f for every registered session, holding the server's
// lock: f must be quick and must not take it.
func (s *Server) eachSession(f func(*session)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		f(ss)
	}
}

func (s *Server) sessionByKey(pid, key uint32) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelKeys[uint64(pid)<<32|uint64(key)]
}

// clientTLS is the client-facing TLS configuration and the
// tls-server-end-point channel binding of its certificate, replaced
// together by a reload: a login binds SCRAM-SHA-256-PLUS to the
// certificate its handshake presented, not to one loaded since.
type clientTLS struct {
	cfg     *tls.Config
	binding []byte
}
