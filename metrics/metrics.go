package metrics

import (
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router"
)

const namespace = "pgferry"

// Label names. Only bounded, configured names are used as labels: never a
// client address, connection id, query or error text.
const (
	labelDatabase = "database"
	labelUser     = "user"
	labelState    = "state"
	labelSource   = "source"
	labelResult   = "result"
	labelReason   = "reason"
)

// rejectReasons are the reasons router passes to Hooks.ClientRejected;
// their counters exist (at 0) from the start so rates work at once.
var rejectReasons = []string{"max_client_conn", "auth", "tls", "allow_cidrs", "hba", "protocol", "admin"}

// poolWaitBuckets span a free connection (well under a millisecond) to
// query_wait_timeout's default (120 s), in seconds.
var poolWaitBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Metrics holds pgferry's collectors and implements router.Hooks. Create it
// with New; it is safe for concurrent use.
type Metrics struct {
	srv atomic.Pointer[router.Server]

	poolWait     *prometheus.HistogramVec
	outages      *prometheus.HistogramVec
	serverLogins *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	rejectedBy   map[string]prometheus.Counter // pre-bound children of rejected

	// tokenMu guards tokens, the Entra ID token sources to export, and
	// tokenBase, per database the counters of the sources removed, which
	// the latest source's are added to so that they do not go backwards
	// when a reload replaces a database's source.
	tokenMu   sync.Mutex
	tokens    []tokenSource
	tokenBase map[string]entra.Stats
}

// New creates pgferry's metrics and registers them on reg, which should be
// the program's private registry: the snapshot collector reading srv at
// scrape time, the hook-fed histograms and counters, pgferry_build_info
// with version, and the Go runtime and process collectors. srv may be nil
// and set later with SetServer, because the Server needs Hooks before it
// exists. New panics if the metrics are already registered on reg, as
// prometheus.MustRegister does.
func New(reg prometheus.Registerer, srv *router.Server, version string) *Metrics {
	m := &Metrics{
		poolWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "pool", Name: "wait_seconds",
			Help:    "Time clients waited in a pool's queue for a server connection, in seconds.",
			Buckets: poolWaitBuckets,
		}, []string{labelDatabase, labelUser}),
		outages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "pool", Name: "outage_seconds",
			Help:    "How long server connections could not be opened (refused, reset, starting up, no writable host) before a dial succeeded again, in seconds: the time a restart, crash or failover took to recover, as pgferry saw it.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{labelDatabase, labelUser}),
		serverLogins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "server", Name: "logins_total",
			Help: "Server login attempts (connect, TLS and authentication), a count, by result (success or failure).",
		}, []string{labelDatabase, labelUser, labelResult}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "client", Name: "rejected_total",
			Help: "Client connections refused before a session started, a count, by reason.",
		}, []string{labelReason}),
		rejectedBy: make(map[string]prometheus.Counter, len(rejectReasons)),
	}
	for _, r := range rejectReasons {
		m.rejectedBy[r] = m.rejected.WithLabelValues(r)
	}
	if srv != nil {
		m.srv.Store(srv)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1 (a unitless marker); the labels carry pgferry's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		m.poolWait, m.outages, m.serverLogins, m.rejected, buildInfo,
		&snapshotCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// SetServer points the snapshot collector at srv. Until it is called (when
// New got a nil srv) scrapes carry no per-pool metrics.
func (m *Metrics) SetServer(srv *router.Server) { m.srv.Store(srv) }

// Hooks returns the router.Hooks to pass in router.Options.Hooks.
func (m *Metrics) Hooks() router.Hooks { return routerHooks{m} }

type routerHooks struct{ m *Metrics }

// ClientRejected counts a refused client by reason.
func (h routerHooks) ClientRejected(reason string) {
	if c, ok := h.m.rejectedBy[reason]; ok {
		c.Inc()
		return
	}
	// Reasons are constants in router; an unlisted one is still bounded.
	h.m.rejected.WithLabelValues(reason).Inc()
}

// PoolHooks binds the pool's histogram and counter children once, so the
// per-acquire path does no label lookup.
func (h routerHooks) PoolHooks(database, user string) pool.Hooks {
	return &poolHooks{
		wait:      h.m.poolWait.WithLabelValues(database, user),
		outage:    h.m.outages.WithLabelValues(database, user),
		loginOK:   h.m.serverLogins.WithLabelValues(database, user, "success"),
		loginFail: h.m.serverLogins.WithLabelValues(database, user, "failure"),
	}
}

// PoolForgotten drops the hook-fed series of a pool pgferry dropped for
// good (router.PoolForgetter): a pool of a database the wildcard entry
// resolved that does not exist.
func (h routerHooks) PoolForgotten(database, user string) {
	h.m.poolWait.DeleteLabelValues(database, user)
	h.m.outages.DeleteLabelValues(database, user)
	h.m.serverLogins.DeleteLabelValues(database, user, "success")
	h.m.serverLogins.DeleteLabelValues(database, user, "failure")
}

type poolHooks struct {
	wait, outage       prometheus.Observer
	loginOK, loginFail prometheus.Counter
}

func (p *poolHooks) WaitObserved(d time.Duration) { p.wait.Observe(d.Seconds()) }

func (p *poolHooks) OutageEnded(d time.Duration) { p.outage.Observe(d.Seconds()) }

func (p *poolHooks) LoginObserved(_ time.Duration, err error) {
	if err != nil {
		p.loginFail.Inc()
		return
	}
	p.loginOK.Inc()
}

// Descriptions of the metrics read from router.Snapshot at scrape time.
var (
	poolLabels = []string{labelDatabase, labelUser}

	descClientConns = desc("client", "connections",
		"Logged-in client connections by pool and state (active: linked to a server connection; waiting: queued for one; idle), a count.",
		labelDatabase, labelUser, labelState)
	descServerConns = desc("server", "connections",
		"Server connections by pool and state (active: lent to a client; idle; login: being opened), a count.",
		labelDatabase, labelUser, labelState)
	descWaiting = desc("pool", "waiting_clients",
		"Clients queued for a server connection right now, a count.", poolLabels...)
	descMaxWait = desc("pool", "max_wait_seconds",
		"How long the oldest queued client has been waiting, in seconds (0 when none waits).", poolLabels...)
	descPaused = desc("pool", "paused",
		"1 while the pool is paused by the admin console (PAUSE or KILL), else 0; unitless.", poolLabels...)
	descAcquires = desc("pool", "acquires_total",
		"Server connections requested from the pool (PgBouncer's server assignments), a count.", poolLabels...)
	descXacts = desc("", "transactions_total",
		"Transactions completed through the pool (server connection released), a count.", poolLabels...)
	descQueries = desc("", "queries_total",
		"Queries completed through the pool (ReadyForQuery for a Query or Sync), a count.", poolLabels...)
	descXactTime = desc("", "transaction_seconds_total",
		"Time server connections were linked to clients, in seconds.", poolLabels...)
	descQueryTime = desc("", "query_seconds_total",
		"Time requests were outstanding on server connections (first request sent to the ReadyForQuery answering the last), in seconds.", poolLabels...)
	descClientRecv = desc("client", "received_bytes_total",
		"Bytes read from the pool's client connections, in bytes.", poolLabels...)
	descClientSent = desc("client", "sent_bytes_total",
		"Bytes written to the pool's client connections, in bytes.", poolLabels...)
	descParses = desc("", "prepared_parses_total",
		"Parse messages for named prepared statements, a count, by source (client: sent by clients; server: sent by pgferry to servers).",
		labelDatabase, labelUser, labelSource)
	descPumped = desc("", "relay_handoffs_total",
		"Server loans whose responses a second relay goroutine carried, a count: all in session mode or for pinned clients; in transaction mode only COPY FROM STDIN, responses slower than 50 ms and cancels in flight (the rest are relayed by the client's own goroutine).",
		poolLabels...)
	descLoopEntries = desc("", "relay_loop_entries_total",
		"Client sessions that went over to the relay loop, which serves them without a goroutine between requests, a count.",
		poolLabels...)
	descLoopHandbacks = desc("", "relay_loop_handbacks_total",
		"Client sessions the relay loop handed back to a goroutine for what it does not serve (a statement that changes session state, COPY, no server connection free, a wake or kill), a count.",
		poolLabels...)
	descBinds = desc("", "binds_total",
		"Bind messages from clients, a count.", poolLabels...)
	descLogins = desc("", "client_logins_total",
		"Successful client logins, a count.", poolLabels...)
	descPinned = desc("", "pinned_clients",
		"Client sessions pinned to their server connection by session state right now, a count.", poolLabels...)
	descDialRetries = desc("pool", "dial_retries_total",
		"Server dials retried after a transient failure (refused, reset, starting up, no writable host) while clients were held, a count.", poolLabels...)
	descAbandoned = desc("", "abandoned_query_cancels_total",
		"Queries cancelled because their client disconnected while they ran, a count.", poolLabels...)
	descSockets = desc("client", "sockets",
		"Open client sockets, including admin console clients and clients still logging in, a count.")
	descParked = desc("client", "parked",
		"Idle client sessions held without a goroutine (Linux), a count: they cost about 3 KiB each instead of 9.")
	descMaxClients = desc("client", "max_connections",
		"The max_client_conn in force: client sockets accepted before new ones are refused with 53300, a count (0: no cap).")
	descPoolSize = desc("pool", "size",
		"Server connections the pool may hold (pool_size, or default_pool_size), a count.", poolLabels...)
	descPoolMinSize = desc("pool", "min_size",
		"Server connections the pool keeps open (min_pool_size), a count.", poolLabels...)
	descPoolReserve = desc("pool", "reserve_size",
		"Extra server connections the pool may open once a client waited reserve_pool_timeout (reserve_pool), a count.", poolLabels...)
	descMaxDBConns = desc("server", "max_db_connections",
		"The max_db_connections cap of a database across its users' pools, a count (only for capped databases).", labelDatabase)
	descDBConns = desc("server", "db_connections",
		"Server connections counted against a database's max_db_connections (open or being opened), a count.", labelDatabase)
	descFleetPeers = desc("fleet", "peers",
		"Peers sharing the fleet budgets heard from within three fleet_interval, a count (this instance not included).")
	descFleetMembers = desc("fleet", "members",
		"Instances the fleet budgets are divided among, this one included unless it is shutting down, a count.")
	descFleetBudget = desc("fleet", "budget_connections",
		"A fleet-wide budget (fleet_max_db_connections as db/<name>, fleet_max_user_connections as user/<name>), a count.", "budget")
	descFleetShare = desc("fleet", "share_connections",
		"This instance's share of a fleet budget: the cap it holds itself to now, a count.", "budget")
	descMaxUserConns = desc("server", "max_user_connections",
		"The max_user_connections cap of a server login user across databases, a count (only for capped users).", labelUser)
	descUserConns = desc("server", "user_connections",
		"Server connections counted against a user's max_user_connections (open or being opened), a count.", labelUser)
	descPins = desc("client", "pins_total",
		"Client sessions that became pinned to a server connection by session state, a count.")
	descPanics = desc("client", "panics_total",
		"Panics recovered in client sessions, each logged with its stack (the session ended or lost its server, the process went on): every one is a bug, a count.")

	descLagBytes = desc("router", "replica_lag_bytes",
		"WAL a replica has not replayed yet, in bytes (-1 when unknown).", labelDatabase, labelBackend)
	descLagSeconds = desc("router", "replica_lag_seconds",
		"How far a replica's replay is behind, in seconds (0 when fully replayed; -1 when unknown).", labelDatabase, labelBackend)
	descInRotation = desc("router", "replica_in_rotation",
		"1 when the replica serves reads, 0 when it is out of rotation (down, lagging or promoted); unitless.", labelDatabase, labelBackend)
	descBackendUp = desc("router", "backend_up",
		"1 when the last probe of the backend succeeded, else 0; unitless. role is primary or replica.", labelDatabase, labelBackend, labelRole)
	descReplicaConns = desc("server", "replica_connections",
		"Server connections to a read replica by state (active, idle, login), a count.", labelDatabase, labelBackend, labelState)
	descTokenExpiry = desc("auth", "entra_token_expiry_timestamp_seconds",
		"When the cached Entra ID token expires, as a Unix time in seconds (0 before the first token).", labelDatabase)
	descTokenRefreshes = desc("auth", "entra_token_refreshes_total",
		"Entra ID tokens obtained, a count.", labelDatabase)
	descTokenFailures = desc("auth", "entra_token_failures_total",
		"Failed Entra ID token requests, a count, by reason (timeout, http_error, credential_unavailable, other).", labelDatabase, labelReason)
	descTokenRejections = desc("auth", "entra_token_rejections_total",
		"Cached Entra ID tokens dropped because a server refused a login made with them, a count.", labelDatabase)
	descClientChecks = desc("auth", "entra_client_signature_checks_total",
		"Client Entra ID tokens whose signature was checked (the rest came from the cache or a check under way), a count.")
	descClientRefused = desc("auth", "entra_client_tokens_refused_total",
		"Client Entra ID tokens refused, a count.")
	descClientKeyFetches = desc("auth", "entra_client_key_fetches_total",
		"Fetches of the tenants' signing key sets for client Entra ID tokens, failed ones included, a count.")
)

// Label names for replicas.
const (
	labelBackend = "backend"
	labelRole    = "role"
)

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
}

// snapshotCollector turns router.Snapshot into const metrics at scrape
// time; pgferry's own gauges and counters live in router and pool.
type snapshotCollector struct{ m *Metrics }

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descClientConns, descServerConns, descWaiting, descMaxWait, descPaused, descAcquires,
		descXacts, descQueries, descXactTime, descQueryTime, descClientRecv, descClientSent, descParses, descBinds, descLogins, descPinned, descPumped, descLoopEntries, descLoopHandbacks,
		descDialRetries, descAbandoned, descSockets, descParked, descPins, descPanics,
		descMaxClients, descPoolSize, descPoolMinSize, descPoolReserve,
		descMaxDBConns, descDBConns, descMaxUserConns, descUserConns, descFleetPeers, descFleetMembers, descFleetBudget, descFleetShare, descLagBytes, descLagSeconds, descInRotation, descBackendUp, descReplicaConns,
		descTokenExpiry, descTokenRefreshes, descTokenFailures, descTokenRejections,
		descClientChecks, descClientRefused, descClientKeyFetches,
	} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectTokens(ch)
	srv := c.m.srv.Load()
	if srv == nil {
		return
	}
	snap := srv.Snapshot()
	seenDB := make(map[string]bool)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descSockets, float64(snap.Clients))
	if st, ok := srv.EntraStats(); ok {
		counter(descClientChecks, float64(st.SignatureChecks))
		counter(descClientRefused, float64(st.Rejected))
		counter(descClientKeyFetches, float64(st.KeyFetches))
	}
	gauge(descParked, float64(snap.ParkedClients))
	counter(descPins, float64(snap.PinnedTotal))
	counter(descPanics, float64(snap.Panics))
	gauge(descMaxClients, float64(snap.MaxClientConn))
	for db, l := range snap.DBLimits {
		gauge(descMaxDBConns, float64(l.Max), db)
		gauge(descDBConns, float64(l.InUse), db)
	}
	if f := snap.Fleet; f != nil {
		gauge(descFleetPeers, float64(f.Peers))
		gauge(descFleetMembers, float64(f.Members))
		for key, b := range f.Budgets {
			gauge(descFleetBudget, float64(b.Max), key)
			gauge(descFleetShare, float64(b.Cap), key)
		}
	}
	for user, l := range snap.UserLimits {
		gauge(descMaxUserConns, float64(l.Max), user)
		gauge(descUserConns, float64(l.InUse), user)
	}
	replicaConns := make(map[replicaKey][3]int)
	var replicaOrder []replicaKey
	for _, p := range snap.Pools {
		db, user := p.Database, p.User
		gauge(descClientConns, float64(p.ClientsActive), db, user, "active")
		gauge(descClientConns, float64(p.ClientsWaiting), db, user, "waiting")
		gauge(descClientConns, float64(p.ClientsIdle), db, user, "idle")
		gauge(descServerConns, float64(p.Stat.Active), db, user, "active")
		gauge(descServerConns, float64(p.Stat.Idle), db, user, "idle")
		gauge(descServerConns, float64(p.Stat.Dialing), db, user, "login")
		gauge(descWaiting, float64(p.Stat.Waiting), db, user)
		gauge(descPoolSize, float64(p.Size), db, user)
		gauge(descPoolMinSize, float64(p.MinSize), db, user)
		gauge(descPoolReserve, float64(p.ReserveSize), db, user)
		gauge(descMaxWait, p.Stat.MaxWait.Seconds(), db, user)
		paused := 0.0
		if p.Stat.Paused {
			paused = 1
		}
		gauge(descPaused, paused, db, user)
		counter(descAcquires, float64(p.Stat.AcquireCount), db, user)
		counter(descXacts, float64(p.Counters.Transactions), db, user)
		counter(descQueries, float64(p.Counters.Queries), db, user)
		counter(descXactTime, p.Counters.TransactionTime.Seconds(), db, user)
		counter(descQueryTime, p.Counters.QueryTime.Seconds(), db, user)
		counter(descClientRecv, float64(p.Counters.BytesReceived), db, user)
		counter(descClientSent, float64(p.Counters.BytesSent), db, user)
		counter(descParses, float64(p.Counters.ClientParses), db, user, "client")
		counter(descParses, float64(p.Counters.ServerParses), db, user, "server")
		counter(descBinds, float64(p.Counters.Binds), db, user)
		counter(descLogins, float64(p.Counters.ClientLogins), db, user)
		gauge(descPinned, float64(p.Counters.PinnedClients), db, user)
		counter(descPumped, float64(p.Counters.PumpedLoans), db, user)
		counter(descLoopEntries, float64(p.Counters.LoopEntries), db, user)
		counter(descLoopHandbacks, float64(p.Counters.LoopHandbacks), db, user)
		counter(descDialRetries, float64(p.Stat.Retries), db, user)
		counter(descAbandoned, float64(p.Counters.AbandonedCancels), db, user)
		if len(p.Replicas) > 0 && !seenDB[db] {
			// Lag is a property of the database's replicas, not of a user's
			// pool: report it once per database.
			seenDB[db] = true
			gauge(descBackendUp, b2f(p.Primary.Up && !p.Primary.InRecovery), db, "primary", "primary")
			for _, r := range p.Replicas {
				gauge(descLagBytes, float64(r.Status.LagBytes), db, r.Name)
				gauge(descLagSeconds, r.Status.LagSeconds, db, r.Name)
				gauge(descInRotation, b2f(r.Status.InRotation), db, r.Name)
				gauge(descBackendUp, b2f(r.Status.Up), db, r.Name, "replica")
			}
		}
		// Each user's pool of the database has its own pool per replica;
		// the series (database, backend, state) has no user, so it is
		// their sum: the same series sent twice fails the whole scrape.
		for _, r := range p.Replicas {
			k := replicaKey{db, r.Name}
			c, ok := replicaConns[k]
			if !ok {
				replicaOrder = append(replicaOrder, k)
			}
			c[0] += r.Stat.Active
			c[1] += r.Stat.Idle
			c[2] += r.Stat.Dialing
			replicaConns[k] = c
		}
	}
	for _, k := range replicaOrder {
		c := replicaConns[k]
		gauge(descReplicaConns, float64(c[0]), k.db, k.backend, "active")
		gauge(descReplicaConns, float64(c[1]), k.db, k.backend, "idle")
		gauge(descReplicaConns, float64(c[2]), k.db, k.backend, "login")
	}
}

// collectTokens sends the Entra ID token sources' series. They do not
// need the Server: a source outlives the pools that made it.
func (c *snapshotCollector) collectTokens(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	c.m.tokenMu.Lock()
	sources := append([]tokenSource(nil), c.m.tokens...)
	base := maps.Clone(c.m.tokenBase)
	c.m.tokenMu.Unlock()
	seen := make(map[string]bool, len(sources))
	for i := len(sources) - 1; i >= 0; i-- {
		// The latest source of a database only: the same series twice
		// would fail the whole scrape.
		ts := sources[i]
		if seen[ts.database] {
			continue
		}
		seen[ts.database] = true
		st := ts.src.Stats()
		counts := addTokenCounters(st, base[ts.database])
		exp := 0.0
		if !st.ExpiresOn.IsZero() {
			exp = float64(st.ExpiresOn.Unix())
		}
		gauge(descTokenExpiry, exp, ts.database)
		counter(descTokenRefreshes, float64(counts.Refreshes), ts.database)
		counter(descTokenRejections, float64(counts.Rejections), ts.database)
		for i := entra.Reason(0); i < entra.NumReasons; i++ {
			counter(descTokenFailures, float64(counts.FailuresByReason[i]), ts.database, entra.ReasonName(i))
		}
	}
}

type replicaKey struct{ db, backend string }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type tokenSource struct {
	database string
	src      interface{ Stats() entra.Stats }
}

// AddTokenSource exports an Entra ID token source's expiry, refreshes and
// failures for database. A source added later for the same database
// replaces the earlier one in the scrape. Safe for concurrent use.
func (m *Metrics) AddTokenSource(database string, src interface{ Stats() entra.Stats }) {
	m.tokenMu.Lock()
	m.tokens = append(m.tokens, tokenSource{database: database, src: src})
	m.tokenMu.Unlock()
}

// RemoveTokenSource stops exporting src (a source that was closed). Safe
// for concurrent use.
// Its counters stay in those of the database's next source.
func (m *Metrics) RemoveTokenSource(src interface{ Stats() entra.Stats }) {
	m.tokenMu.Lock()
	defer m.tokenMu.Unlock()
	m.tokens = slices.DeleteFunc(m.tokens, func(ts tokenSource) bool {
		if ts.src != src {
			return false
		}
		if m.tokenBase == nil {
			m.tokenBase = make(map[string]entra.Stats)
		}
		m.tokenBase[ts.database] = addTokenCounters(m.tokenBase[ts.database], src.Stats())
		return true
	})
}

// addTokenCounters returns st with o's counters added.
func addTokenCounters(st, o entra.Stats) entra.Stats {
	st.Refreshes += o.Refreshes
	st.Requests += o.Requests
	st.Rejections += o.Rejections
	for i := range st.FailuresByReason {
		st.FailuresByReason[i] += o.FailuresByReason[i]
	}
	return st
}
