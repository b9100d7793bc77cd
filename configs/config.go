package configs

import (
	"runtime"
	"time"
)

// Enumerated values accepted by the configuration.
const (
	poolModeTransaction = "transaction"
	poolModeSession     = "session"

	authPassword = "password"
	authEntra    = "entra"

	authCert = "cert"
	authHBA  = "hba"

	entraDefault          = "default"
	entraManagedIdentity  = "managed_identity"
	entraWorkloadIdentity = "workload_identity"
	entraClientSecret     = "client_secret"
	entraAzureCLI         = "azure_cli"

	// defaultEntraScope is the token audience of Azure Database for
	// PostgreSQL (see docs/entra-id.md).
	defaultEntraScope = "https://ossrdbms-aad.database.windows.net/.default"

	replicaFallbackPrimary = "primary"
	replicaFallbackError   = "error"

	// wildcardDatabase is PgBouncer's fallback [databases] entry name.
	wildcardDatabase = "*"
)

// Config is the complete pgferry configuration. Key names and defaults follow
// PgBouncer where the setting exists there (docs/pgbouncer-reference.md); the
// TOML key of each field is its toml tag.
//
// A Config returned by [Load], [LoadWithEnv] or [Parse] has every derived
// default filled in and has passed [Config.Validate]. Treat it as immutable
// once published: it is safe for concurrent reads, and a reload builds a new
// value rather than mutating the current one.
type Config struct {
	// ListenAddr is the TCP address to listen on; "*" means all interfaces,
	// as in PgBouncer.
	ListenAddr string `toml:"listen_addr"`
	// ListenPort is the TCP port; 0 picks an ephemeral port (tests).
	ListenPort int `toml:"listen_port"`
	// UnixSocketDir is the directory for the .s.PGSQL.<port> socket; empty
	// disables the unix socket. Unlike PgBouncer there is no /tmp default.
	UnixSocketDir string `toml:"unix_socket_dir"`
	// SoReuseport sets SO_REUSEPORT on the listening socket so several
	// pgferry processes can share the port.
	SoReuseport bool `toml:"so_reuseport"`

	// AuthType is the client authentication method: "scram-sha-256", "md5"
	// (accepts SCRAM secrets too, like PgBouncer), "plain", "trust", "cert"
	// (the client certificate's common name must equal the user name) or
	// "hba" (the method comes from the first matching line of AuthHBAFile).
	AuthType string `toml:"auth_type"`
	// AuthFile is a PgBouncer userlist.txt with client secrets.
	AuthFile string `toml:"auth_file"`
	// AuthUser, when set, looks up users missing from auth_file on the
	// server with AuthQuery, logged in as AuthUser (whose own password
	// comes from auth_file, [users] or the database entry), in AuthDBName
	// (default: the database the client asked for). A database entry's
	// auth_user overrides it.
	AuthUser   string `toml:"auth_user"`
	AuthQuery  string `toml:"auth_query"`
	AuthDBName string `toml:"auth_dbname"`
	// AuthHBAFile is a pg_hba.conf-style file (PgBouncer's subset) that
	// picks the method per connection when AuthType is "hba". It is read
	// at start and on every reload; a line pgferry cannot honour stops the
	// start or the reload.
	AuthHBAFile string `toml:"auth_hba_file"`
	// AdminUsers may run every admin console command.
	AdminUsers []string `toml:"admin_users"`
	// StatsUsers may run the read-only SHOW commands of the admin console.
	StatsUsers []string `toml:"stats_users"`
	// AllowCIDRs restricts client source addresses; empty allows all.
	AllowCIDRs []string `toml:"allow_cidrs"`

	// PoolMode is "transaction" or "session".
	PoolMode string `toml:"pool_mode"`
	// DefaultPoolSize is the number of server connections per (database,
	// user) pool unless a database or user overrides it.
	DefaultPoolSize int `toml:"default_pool_size"`
	// MinPoolSize keeps at least this many server connections open per pool.
	MinPoolSize int `toml:"min_pool_size"`
	// ReservePoolSize is how many extra connections a pool may open once a
	// client has waited ReservePoolTimeout.
	ReservePoolSize int `toml:"reserve_pool_size"`
	// ReservePoolTimeout is the wait after which the reserve pool is used;
	// 0 disables the reserve pool, as in PgBouncer.
	ReservePoolTimeout Duration `toml:"reserve_pool_timeout"`
	// MaxClientConn caps accepted client connections. The default, 10000, is
	// deliberately far above PgBouncer's 100: serverless and autoscaled
	// clients open connections in bursts, and a client socket costs little
	// compared with a server connection, which the pool sizes still bound.
	MaxClientConn int `toml:"max_client_conn"`
	// MaxDBConnections caps server connections per database across users;
	// 0 is unlimited.
	MaxDBConnections int `toml:"max_db_connections"`
	// MaxUserConnections caps server connections per user across databases;
	// 0 is unlimited.
	MaxUserConnections int `toml:"max_user_connections"`
	// FleetMaxDBConnections caps server connections per database across
	// the whole fleet of peered instances (router/fleet): each instance
	// takes its share. 0 is no fleet cap. Needs peer_id.
	FleetMaxDBConnections int `toml:"fleet_max_db_connections"`
	// FleetMaxUserConnections is the same per user across databases.
	FleetMaxUserConnections int `toml:"fleet_max_user_connections"`
	// FleetInterval is the heartbeat between peers sharing a fleet budget;
	// a peer silent for three intervals no longer counts.
	FleetInterval Duration `toml:"fleet_interval"`

	// ServerLifetime closes unlinked server connections older than this
	// (0: use each connection once).
	ServerLifetime Duration `toml:"server_lifetime"`
	// ServerIdleTimeout closes server connections idle longer than this.
	ServerIdleTimeout Duration `toml:"server_idle_timeout"`
	// ServerConnectTimeout bounds connect plus login to a server.
	ServerConnectTimeout Duration `toml:"server_connect_timeout"`
	// ServerLoginRetry is the pause after a failed server login during which
	// new clients fail fast.
	ServerLoginRetry Duration `toml:"server_login_retry"`
	// OutageHoldTimeout is how long, from the start of an outage (server
	// connections refused or reset, PostgreSQL starting up or shutting
	// down, no writable host during a failover), clients' transactions
	// wait for a server instead of failing; 0 fails them at once, as
	// PgBouncer does. Bounded by query_wait_timeout.
	OutageHoldTimeout Duration `toml:"outage_hold_timeout"`
	// ServerResetQuery runs when a session-mode client releases its server.
	ServerResetQuery string `toml:"server_reset_query"`
	// ServerResetQueryAlways runs ServerResetQuery in transaction mode too.
	ServerResetQueryAlways bool `toml:"server_reset_query_always"`
	// ServerCheckDelay is the idle age after which a server connection is
	// health-checked before reuse.
	ServerCheckDelay Duration `toml:"server_check_delay"`
	// ServerCheckQuery is the health-check query; empty sends an empty Query
	// message, as PgBouncer does.
	ServerCheckQuery string `toml:"server_check_query"`

	// QueryTimeout cancels queries running longer; 0 disables.
	QueryTimeout Duration `toml:"query_timeout"`
	// QueryWaitTimeout disconnects clients queued for a server longer; 0
	// disables.
	QueryWaitTimeout Duration `toml:"query_wait_timeout"`
	// ClientIdleTimeout closes idle clients; 0 disables.
	ClientIdleTimeout Duration `toml:"client_idle_timeout"`
	// ClientLoginTimeout bounds client startup and authentication.
	ClientLoginTimeout Duration `toml:"client_login_timeout"`
	// IdleTransactionTimeout disconnects clients idle inside a transaction;
	// 0 disables.
	IdleTransactionTimeout Duration `toml:"idle_transaction_timeout"`
	// TransactionTimeout disconnects clients whose transaction stays open
	// longer; 0 disables.
	TransactionTimeout Duration `toml:"transaction_timeout"`
	// CancelWaitTimeout bounds forwarding a cancel request.
	CancelWaitTimeout Duration `toml:"cancel_wait_timeout"`
	// ShutdownTimeout is how long a graceful shutdown waits for clients to
	// finish before closing them (pgferry only).
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// MaxPreparedStatements is the number of protocol-level prepared
	// statements tracked per client in transaction mode; 0 disables tracking.
	MaxPreparedStatements int `toml:"max_prepared_statements"`
	// TrackExtraParameters lists startup parameters tracked in addition to
	// client_encoding, DateStyle, TimeZone, standard_conforming_strings and
	// application_name.
	TrackExtraParameters []string `toml:"track_extra_parameters"`
	// IgnoreStartupParameters lists startup parameters silently dropped.
	IgnoreStartupParameters []string `toml:"ignore_startup_parameters"`
	// PinOnSessionState keeps a client on its server connection in
	// transaction mode once it creates session state (SET, LISTEN,
	// temporary tables, advisory locks) instead of leaking that state.
	PinOnSessionState bool `toml:"pin_on_session_state"`
	// RelayLoop serves clients in transaction mode between requests from
	// an epoll loop, without a goroutine each, where it can (Linux,
	// clients without TLS or with TLS 1.3, none of the timeouts it does
	// not arm set; see docs/operations.md). Off, every session keeps a
	// goroutine. Unless set, it is on for Linux with at most two CPUs
	// (RelayLoopDefault).
	RelayLoop bool `toml:"relay_loop"`
	// RelayLoopSet records that the file or the environment set relay_loop
	// (Parse fills it); otherwise RelayLoop holds RelayLoopDefault, and
	// ToTOML leaves the key to the machine that reads the file.
	RelayLoopSet bool `toml:"-"`
	// Included lists the files a pgbouncer.ini read through %include, as
	// absolute paths (Parse fills it), so that they are watched too.
	Included []string `toml:"-"`
	// MaxPacketSize is the largest protocol message accepted, in bytes.
	MaxPacketSize int `toml:"max_packet_size"`

	// ClientTLSSSLMode is the TLS mode towards clients: "disable", "allow",
	// "prefer", "require", "verify-ca" or "verify-full".
	ClientTLSSSLMode string `toml:"client_tls_sslmode"`
	// ClientTLSKeyFile is the private key presented to clients.
	ClientTLSKeyFile string `toml:"client_tls_key_file"`
	// ClientTLSCertFile is the certificate presented to clients.
	ClientTLSCertFile string `toml:"client_tls_cert_file"`
	// ClientTLSCAFile verifies client certificates (verify-ca, verify-full).
	ClientTLSCAFile string `toml:"client_tls_ca_file"`
	// ClientTLSProtocols are the TLS versions clients may use, as
	// PgBouncer's client_tls_protocols ("secure": TLS 1.2 and 1.3; see
	// TLSVersions).
	ClientTLSProtocols string `toml:"client_tls_protocols"`
	// ClientTLSCiphers are the TLS 1.2 (and older) cipher suites clients
	// may use, an OpenSSL cipher list as PgBouncer's client_tls_ciphers
	// ("default": Go's; see TLSCipherSuites). TLS 1.3's suites are Go's
	// choice.
	ClientTLSCiphers string `toml:"client_tls_ciphers"`
	// ClientTLSECDHCurve are the key exchange groups clients may use, as
	// PgBouncer's client_tls_ecdhcurve: "auto" (Go's), or curve names
	// separated by colons (see TLSCurves).
	ClientTLSECDHCurve string `toml:"client_tls_ecdhcurve"`
	// ServerTLSSSLMode is the default TLS mode towards servers: "disable",
	// "allow", "prefer", "require", "verify-ca" or "verify-full".
	ServerTLSSSLMode string `toml:"server_tls_sslmode"`
	// ServerTLSCAFile verifies server certificates; empty uses system roots.
	ServerTLSCAFile string `toml:"server_tls_ca_file"`
	// ServerTLSKeyFile is the client key presented to servers.
	ServerTLSKeyFile string `toml:"server_tls_key_file"`
	// ServerTLSCertFile is the client certificate presented to servers.
	ServerTLSCertFile string `toml:"server_tls_cert_file"`
	// ServerTLSProtocols are the TLS versions pgferry may use with
	// servers, as PgBouncer's server_tls_protocols (see TLSVersions).
	ServerTLSProtocols string `toml:"server_tls_protocols"`
	// ServerTLSCiphers are the TLS 1.2 (and older) cipher suites pgferry
	// may use with servers, as PgBouncer's server_tls_ciphers (see
	// TLSCipherSuites).
	ServerTLSCiphers string `toml:"server_tls_ciphers"`

	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string `toml:"log_level"`
	// LogFormat is "json" or "console".
	LogFormat string `toml:"log_format"`
	// MetricsListen is the host:port of the Prometheus /metrics endpoint;
	// empty disables it.
	MetricsListen string `toml:"metrics_listen"`
	// DebugListen is the host:port of the pprof endpoint; empty disables it.
	DebugListen string `toml:"debug_listen"`
	// AuthFailureDelay is the base delay before answering a failed client
	// authentication, grown per failure to slow brute force; 0 disables.
	AuthFailureDelay Duration `toml:"auth_failure_delay"`

	// ClientEntra configures client logins with Microsoft Entra ID access
	// tokens, for databases and users with client_auth = "entra"
	// (docs/entra-id.md).
	ClientEntra ClientEntra `toml:"client_entra"`
	// Users holds per-user settings keyed by user name.
	Users map[string]User `toml:"users"`
	// Databases holds the routable databases keyed by the name clients
	// connect to; "*" is the fallback for names not listed.
	Databases map[string]Database `toml:"databases"`

	// WatchConfig reloads the config file, auth_file and auth_hba_file
	// when their contents change (a ConfigMap update included), as SIGHUP
	// does; default on.
	WatchConfig bool `toml:"watch_config"`

	// PeerID identifies this instance among peered pgferry (or PgBouncer)
	// instances behind one load balancer: it is written into the cancel
	// keys handed to clients, so a cancel that lands on another instance is
	// forwarded here (PgBouncer 1.19+ peering). 0 disables peering; at most
	// 16383.
	PeerID int `toml:"peer_id"`
	// Peers lists the other instances by peer id ("2" = { host, port }),
	// PgBouncer's [peers] section.
	Peers map[string]Peer `toml:"peers"`
	// PeersDNS names the instances through DNS instead (a Kubernetes
	// headless Service): every address it resolves to, on PeersPort
	// (default listen_port), is a peer. A cancel for another instance is
	// sent to each of them, re-resolved at most every PeersDNSInterval.
	PeersDNS         string   `toml:"peers_dns"`
	PeersPort        int      `toml:"peers_port"`
	PeersDNSInterval Duration `toml:"peers_dns_interval"`
}

// User holds per-user settings; zero values inherit the global ones.
type User struct {
	// Password is the client-facing secret: plain text, "md5..." or
	// "SCRAM-SHA-256$...". It is an alternative to an auth_file entry.
	Password Secret `toml:"password"`
	// PoolMode overrides Config.PoolMode for this user.
	PoolMode string `toml:"pool_mode"`
	// PoolSize, when set, is the size of every pool of this user (the
	// server login user), whatever the database's pool_size, as
	// PgBouncer's [users] pool_size; nil takes the database's. 0 (PgBouncer:
	// no limit per pool) is refused.
	PoolSize *int `toml:"pool_size"`
	// ReservePoolSize, when set, is the reserve of every pool of this
	// user, whatever the database's reserve_pool, 0 included; nil takes
	// the database's.
	ReservePoolSize *int `toml:"reserve_pool_size"`
	// MaxUserConnections overrides Config.MaxUserConnections; 0 inherits.
	MaxUserConnections int `toml:"max_user_connections"`
	// FleetMaxUserConnections overrides Config.FleetMaxUserConnections;
	// 0 inherits.
	FleetMaxUserConnections int `toml:"fleet_max_user_connections"`
	// ClientAuth "entra" makes this user log in with an Entra ID access
	// token as its password whatever auth_type says; "" follows auth_type.
	ClientAuth string `toml:"client_auth"`
}

// ClientEntra says which Entra ID access tokens clients may log in with
// and which PostgreSQL user each identity may log in as. A client sends
// the token as its password (over TLS: client_tls_sslmode must require
// it); the user name it asks for must list the token's identity in Roles.
type ClientEntra struct {
	// Tenants are the directory (tenant) ids, GUIDs, whose tokens are
	// accepted. Required when any client logs in with Entra.
	Tenants []string `toml:"tenants"`
	// Audiences are the accepted aud claims; default
	// ["https://ossrdbms-aad.database.windows.net"], the audience of tokens
	// for Azure Database for PostgreSQL.
	Audiences []string `toml:"audiences"`
	// AuthorityHost serves the tenants' OpenID discovery documents (and
	// names the v2 issuers); default https://login.microsoftonline.com.
	// Azure Government: https://login.microsoftonline.us; Azure China:
	// https://login.chinacloudapi.cn.
	AuthorityHost string `toml:"authority_host"`
	// V1IssuerHost names the v1 issuers ({host}/{tenant}/); default
	// https://sts.windows.net. Azure Government:
	// https://sts.usgovcloudapi.net; Azure China: https://sts.chinacloudapi.cn.
	V1IssuerHost string `toml:"v1_issuer_host"`
	// ClockSkew is the leeway on exp and nbf; default 1m.
	ClockSkew Duration `toml:"clock_skew"`
	// KeyRefreshInterval is the least time between fetches of a tenant's
	// signing keys prompted by an unknown key id; default 5m.
	KeyRefreshInterval Duration `toml:"key_refresh_interval"`
	// Roles maps a PostgreSQL user name to the identities that may log in
	// as it: "user:<UPN>", "app:<application (client) id>" (service
	// principals and managed identities), "object:<object id>" or
	// "group:<group object id>".
	Roles map[string][]string `toml:"roles"`
}

// DefaultAuthQuery is PgBouncer's default auth_query for PostgreSQL 14+:
// a role's secret, NULL once it expired, and no row for a role that may
// not log in.
const DefaultAuthQuery = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

// Peer is another pgferry (or PgBouncer) instance that cancel requests for
// its clients are forwarded to.
type Peer struct {
	Host string `toml:"host"`
	// Port defaults to 6432.
	Port int `toml:"port"`
}

// Replica is a read replica of a database.
type Replica struct {
	// Host is the replica's host name or address.
	Host string `toml:"host"`
	// Port defaults to the database's port.
	Port int `toml:"port"`
	// Weight is the relative share of reads; defaults to 1.
	Weight int `toml:"weight"`
}

// Database describes one routable database. After loading, every field with
// a global counterpart holds the effective value, so consumers never need to
// consult the globals.
type Database struct {
	// Host is the server host, or a comma-separated list tried in order for
	// failover (the first writable one wins). Required, also for "*".
	Host string `toml:"host"`
	// Port is the server port; default 5432.
	Port int `toml:"port"`
	// DBName is the server database; defaults to the entry's name. For the
	// "*" entry empty means the client's database name.
	DBName string `toml:"dbname"`
	// User is the server login user; empty means the client's user name.
	User string `toml:"user"`
	// AuthUser overrides the global auth_user for this database.
	AuthUser string `toml:"auth_user"`
	// Password is the server login password.
	Password Secret `toml:"password"`
	// PasswordFile is read at load time (trailing newline trimmed) into
	// Password; it and Password are mutually exclusive.
	PasswordFile string `toml:"password_file"`
	// PoolSize defaults to Config.DefaultPoolSize, also when 0 in TOML;
	// pool_size=0 on a pgbouncer.ini line (PgBouncer: no limit per pool)
	// is refused.
	PoolSize int `toml:"pool_size"`
	// MinPoolSize defaults to Config.MinPoolSize when the key is left out
	// (or negative on a pgbouncer.ini line); an explicit 0 is kept, as
	// PgBouncer keeps it.
	MinPoolSize int `toml:"min_pool_size"`
	// ReservePool defaults to Config.ReservePoolSize as MinPoolSize does:
	// an explicit 0 is kept.
	ReservePool int `toml:"reserve_pool"`
	// MaxDBConnections defaults to Config.MaxDBConnections (0: unlimited).
	MaxDBConnections int `toml:"max_db_connections"`
	// FleetMaxDBConnections defaults to Config.FleetMaxDBConnections (0:
	// no fleet cap).
	FleetMaxDBConnections int `toml:"fleet_max_db_connections"`
	// PoolMode defaults to Config.PoolMode.
	PoolMode string `toml:"pool_mode"`
	// SSLMode defaults to Config.ServerTLSSSLMode.
	SSLMode string `toml:"sslmode"`
	// SSLRootCert defaults to Config.ServerTLSCAFile.
	SSLRootCert string `toml:"sslrootcert"`
	// AllowCleartextPassword permits answering a server's cleartext password
	// request on a connection without TLS.
	AllowCleartextPassword bool `toml:"allow_cleartext_password"`
	// Auth is "password" (default) or "entra" (Microsoft Entra ID token as
	// the password; needs sslmode require or stricter).
	Auth string `toml:"auth"`
	// ClientAuth "entra" makes clients of this database log in with an
	// Entra ID access token as their password (see ClientEntra) whatever
	// auth_type says; "" follows auth_type.
	ClientAuth string `toml:"client_auth"`
	// EntraCredential is "default", "managed_identity", "workload_identity",
	// "client_secret" or "azure_cli"; "default" when Auth is "entra".
	EntraCredential string `toml:"entra_credential"`
	// EntraClientID is a user-assigned identity's client id, or the app id
	// for workload_identity and client_secret.
	EntraClientID string `toml:"entra_client_id"`
	// EntraTenantID is the directory (tenant) id.
	EntraTenantID string `toml:"entra_tenant_id"`
	// EntraClientSecretFile holds the client secret (client_secret only).
	// The Entra code reads it; loading only checks that it exists.
	EntraClientSecretFile string `toml:"entra_client_secret_file"`
	// EntraClientSecretEnv names an environment variable holding the client
	// secret (client_secret only).
	EntraClientSecretEnv string `toml:"entra_client_secret_env"`
	// EntraTokenFile is the federated token file for workload_identity.
	EntraTokenFile string `toml:"entra_token_file"`
	// EntraAuthorityHost overrides the authority (sovereign clouds, tests);
	// must be an https URL.
	EntraAuthorityHost string `toml:"entra_authority_host"`
	// EntraScope is the token scope; defaults to the Azure Database for
	// PostgreSQL scope when Auth is "entra".
	EntraScope string `toml:"entra_scope"`
	// Replicas are read replicas of this database.
	Replicas []Replica `toml:"replicas"`
	// MaxReplicaLagBytes is the WAL byte lag above which a replica is not
	// used; default 16 MiB.
	MaxReplicaLagBytes int64 `toml:"max_replica_lag_bytes"`
	// MaxReplicaLag is the replay time lag above which a replica is not
	// used; default 10s.
	MaxReplicaLag Duration `toml:"max_replica_lag"`
	// LagCheckInterval is how often replica lag is measured; default 1s.
	LagCheckInterval Duration `toml:"lag_check_interval"`
	// ReplicaFallback is "primary" (read from the primary when no replica
	// qualifies) or "error".
	ReplicaFallback string `toml:"replica_fallback"`
	// ReadYourWrites routes a client's reads to the primary for this long
	// after it writes; default 2s, an explicit 0 disables.
	ReadYourWrites Duration `toml:"read_your_writes"`
	// ReadYourWritesLSN routes a client's reads after a write transaction
	// to a replica only once that replica has replayed past the
	// transaction's commit (pg_current_wal_insert_lsn() read on the
	// primary right after it: one extra round trip per write transaction),
	// instead of by the read_your_writes time window.
	ReadYourWritesLSN bool `toml:"read_your_writes_lsn"`
	// RouteReadStatements sends read-only statements outside transactions to
	// replicas.
	RouteReadStatements bool `toml:"route_read_statements"`
	// ReadOnlyAlias is another database name (e.g. "app_ro") whose sessions
	// read from this database's replicas.
	ReadOnlyAlias string `toml:"readonly_alias"`
}

// Per-database defaults that have no global counterpart.
const (
	defaultDBPort             = 5432
	defaultMaxReplicaLagBytes = 16 << 20
	defaultMaxReplicaLag      = Duration(10 * time.Second)
	defaultLagCheckInterval   = Duration(time.Second)
	defaultReadYourWrites     = Duration(2 * time.Second)
	minMaxPacketSize          = 1024
)

// defaultRelayLoop is relay_loop's default: on where Go runs on Linux (the
// only place the loop is built) on at most two CPUs (GOMAXPROCS at
// start-up, which follows a container's CPU limit, not its request).
// Measured on two CPUs, the loop, one thread, cost
// less CPU per transaction than a goroutine per session in every steady
// scenario measured since 21747ac (bench/README.md); with more CPUs,
// goroutines spread over all of them can serve more transactions than one
// loop thread (not measured beyond two CPUs).
var defaultRelayLoop = runtime.GOOS == "linux" && runtime.GOMAXPROCS(0) <= 2

// RelayLoopDefault is relay_loop's default: defaultRelayLoop. Clients with
// TLS 1.3 are served by the loop as plain ones are (their records are
// internal/tls13's), at less pooler CPU per transaction than on goroutines
// (bench/README.md); those with TLS 1.2 stay on goroutines either way.
func RelayLoopDefault() bool { return defaultRelayLoop }

// ClientTLSRequired reports whether client_tls_sslmode refuses clients
// that do not use TLS.
func (c *Config) ClientTLSRequired() bool {
	switch c.ClientTLSSSLMode {
	case "require", "verify-ca", "verify-full":
		return true
	}
	return false
}

// Default returns a Config holding every global default and no users or
// databases. The caller owns the result.
func Default() *Config {
	return &Config{
		ListenAddr:              "127.0.0.1",
		ListenPort:              6432,
		AuthType:                "scram-sha-256",
		AdminUsers:              []string{},
		StatsUsers:              []string{},
		AllowCIDRs:              []string{},
		PoolMode:                poolModeTransaction,
		DefaultPoolSize:         20,
		ReservePoolTimeout:      Duration(5 * time.Second),
		MaxClientConn:           10000,
		ServerLifetime:          Duration(3600 * time.Second),
		ServerIdleTimeout:       Duration(600 * time.Second),
		ServerConnectTimeout:    Duration(15 * time.Second),
		ServerLoginRetry:        Duration(15 * time.Second),
		OutageHoldTimeout:       Duration(60 * time.Second),
		ServerResetQuery:        "DISCARD ALL",
		ServerCheckDelay:        Duration(30 * time.Second),
		QueryWaitTimeout:        Duration(120 * time.Second),
		ClientLoginTimeout:      Duration(60 * time.Second),
		CancelWaitTimeout:       Duration(10 * time.Second),
		PeersDNSInterval:        Duration(10 * time.Second),
		FleetInterval:           Duration(time.Second),
		WatchConfig:             true,
		AuthQuery:               DefaultAuthQuery,
		ShutdownTimeout:         Duration(30 * time.Second),
		MaxPreparedStatements:   200,
		TrackExtraParameters:    []string{"IntervalStyle", "search_path"},
		IgnoreStartupParameters: []string{},
		PinOnSessionState:       true,
		RelayLoop:               defaultRelayLoop,
		MaxPacketSize:           2147483647,
		ClientTLSSSLMode:        "disable",
		ClientTLSProtocols:      "secure",
		ClientTLSCiphers:        "default",
		ClientTLSECDHCurve:      "auto",
		ServerTLSSSLMode:        "prefer",
		ServerTLSProtocols:      "secure",
		ServerTLSCiphers:        "default",
		LogLevel:                "info",
		LogFormat:               "json",
		Users:                   map[string]User{},
		Databases:               map[string]Database{},
	}
}
