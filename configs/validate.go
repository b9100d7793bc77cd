package configs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Accepted values of the enumerated settings.
var (
	authTypes        = []string{"scram-sha-256", "md5", "plain", "trust", authCert, authHBA}
	poolModes        = []string{poolModeTransaction, poolModeSession}
	sslModes         = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
	logLevels        = []string{"debug", "info", "warn", "error"}
	logFormats       = []string{"json", "console"}
	dbAuths          = []string{authPassword, authEntra}
	clientAuths      = []string{authEntra}
	entraCredentials = []string{entraDefault, entraManagedIdentity, entraWorkloadIdentity, entraClientSecret, entraAzureCLI}
	replicaFallbacks = []string{replicaFallbackPrimary, replicaFallbackError}
)

// keyError is one validation problem, tied to the key path it concerns.
type keyError struct {
	key string
	msg string
}

func (e *keyError) Error() string { return e.key + ": " + e.msg }

// problems collects validation errors so that all are reported at once.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, &keyError{key: key, msg: fmt.Sprintf(format, args...)})
}

// oneOf checks that v is one of allowed.
func (p *problems) oneOf(key, v string, allowed []string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(key, "must be one of %s, got %q", quoteList(allowed), v)
}

// between checks lo <= v <= hi.
func (p *problems) between(key string, v, lo, hi int64) {
	if v < lo || v > hi {
		p.add(key, "must be between %d and %d, got %d", lo, hi, v)
	}
}

// atLeast checks v >= lo.
func (p *problems) atLeast(key string, v, lo int64) {
	if v < lo {
		p.add(key, "must be at least %d, got %d", lo, v)
	}
}

// file checks that path names an existing regular file (or a symlink to one).
func (p *problems) file(key, path string) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		p.add(key, "%v", err)
	case fi.IsDir():
		p.add(key, "%s is a directory", path)
	}
}

// hostPort checks a "host:port" listen address.
func (p *problems) hostPort(key, v string) {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "must be host:port, got %q", v)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		p.add(key, "port must be a number between 0 and 65535, got %q", port)
	}
}

// nonNegativeDurations checks every Duration field of the struct v.
func (p *problems) nonNegativeDurations(prefix string, v any) {
	rv := reflect.ValueOf(v)
	for _, f := range reflect.VisibleFields(rv.Type()) {
		if f.Type != reflect.TypeFor[Duration]() {
			continue
		}
		if d := rv.FieldByIndex(f.Index).Interface().(Duration); d < 0 {
			p.add(prefix+tomlKey(f), "must not be negative, got %s", d)
		}
	}
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// Validate checks c and returns every problem found, joined with
// errors.Join; each line names the key path, e.g.
// "databases.app.port: must be between 1 and 65535, got 70000". It checks
// that referenced files exist but does not parse them. Validate expects the
// per-database defaults to be filled in, as [Load] and [Parse] do; it does
// not modify c.
func (c *Config) Validate() error {
	var p problems
	c.validateListeners(&p)
	c.validateAuth(&p)
	c.validateClientEntra(&p)
	c.validatePooling(&p)
	c.validateTLS(&p)
	c.validatePeers(&p)
	p.oneOf("log_level", c.LogLevel, logLevels)
	p.oneOf("log_format", c.LogFormat, logFormats)
	p.nonNegativeDurations("", *c)

	for _, name := range sortedKeys(c.Users) {
		u := c.Users[name]
		key := func(k string) string { return "users." + quoteKey(name) + "." + k }
		if name == "" {
			p.add("users."+quoteKey(name), "user name must not be empty")
		}
		if u.PoolMode != "" {
			p.oneOf(key("pool_mode"), u.PoolMode, poolModes)
		}
		if u.PoolSize != nil && *u.PoolSize == 0 {
			p.add(key("pool_size"), "0 (PgBouncer: no limit per pool, only max_db_connections and max_user_connections) is not supported by pgferry; "+
				"set the number of server connections the user's pools may open, or leave the key out for the database's pool_size")
		} else if u.PoolSize != nil {
			p.atLeast(key("pool_size"), int64(*u.PoolSize), 1)
		}
		if u.ReservePoolSize != nil {
			p.atLeast(key("reserve_pool_size"), int64(*u.ReservePoolSize), 0)
		}
		p.atLeast(key("max_user_connections"), int64(u.MaxUserConnections), 0)
		p.atLeast(key("fleet_max_user_connections"), int64(u.FleetMaxUserConnections), 0)
		if u.ClientAuth != "" {
			p.oneOf(key("client_auth"), u.ClientAuth, clientAuths)
		}
	}

	if len(c.Databases) == 0 {
		p.add("databases", `at least one database (or the "*" fallback) is required`)
	}
	aliases := map[string]string{}
	for _, name := range sortedKeys(c.Databases) {
		c.validateDatabase(&p, name, c.Databases[name], aliases)
	}
	return errors.Join(p...)
}

// maxPeerID is PgBouncer's: the id travels in 14 bits of the cancel key.
const maxPeerID = 16383

func (c *Config) validatePeers(p *problems) {
	p.between("peer_id", int64(c.PeerID), 0, maxPeerID)
	for _, name := range sortedKeys(c.Peers) {
		key := "peers." + quoteKey(name)
		id, err := strconv.Atoi(name)
		if err != nil || id < 1 || id > maxPeerID {
			p.add(key, "a peer is named by its peer_id, a number from 1 to %d", maxPeerID)
		}
		peer := c.Peers[name]
		if peer.Host == "" {
			p.add(key+".host", "must be set")
		}
		p.between(key+".port", int64(peer.Port), 0, 65535)
	}
	if (len(c.Peers) > 0 || c.PeersDNS != "") && c.PeerID == 0 {
		p.add("peer_id", "must be set (1 to %d, unique among the peers) when peers or peers_dns is set", maxPeerID)
	}
	p.between("peers_port", int64(c.PeersPort), 0, 65535)
	if c.FleetBudgets() && c.PeerID == 0 {
		p.add("peer_id", "must be set (1 to %d, unique among the peers) when fleet_max_db_connections or fleet_max_user_connections is set", maxPeerID)
	}
	if d := c.FleetInterval.Std(); d < 50*time.Millisecond || d > time.Minute {
		p.add("fleet_interval", "must be between 50ms and 1m, got %s", d)
	}
}

// FleetBudgets reports whether any fleet-wide connection budget is set.
func (c *Config) FleetBudgets() bool {
	if c.FleetMaxDBConnections > 0 || c.FleetMaxUserConnections > 0 {
		return true
	}
	for _, db := range c.Databases {
		if db.FleetMaxDBConnections > 0 {
			return true
		}
	}
	for _, u := range c.Users {
		if u.FleetMaxUserConnections > 0 {
			return true
		}
	}
	return false
}

// quoteKey quotes a key segment the way TOML needs it.
func quoteKey(k string) string {
	return dbKey(k)[len("databases."):]
}

func (c *Config) validateListeners(p *problems) {
	switch {
	case c.ListenAddr == "":
		p.add("listen_addr", `must not be empty (use "*" for all interfaces)`)
	case c.ListenAddr == "*":
	case strings.ContainsAny(c.ListenAddr, ", \t"):
		p.add("listen_addr", `must be a single address or "*", got %q`, c.ListenAddr)
	case strings.Contains(c.ListenAddr, ":") && net.ParseIP(c.ListenAddr) == nil:
		p.add("listen_addr", "must be a host name or IP address without a port, got %q", c.ListenAddr)
	}
	p.between("listen_port", int64(c.ListenPort), 0, 65535)
	if c.MetricsListen != "" {
		p.hostPort("metrics_listen", c.MetricsListen)
	}
	if c.DebugListen != "" {
		p.hostPort("debug_listen", c.DebugListen)
	}
	for i, cidr := range c.AllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			p.add(fmt.Sprintf("allow_cidrs[%d]", i), "invalid CIDR %q", cidr)
		}
	}
}

func (c *Config) validateAuth(p *problems) {
	p.oneOf("auth_type", c.AuthType, authTypes)
	if c.AuthFile != "" {
		p.file("auth_file", c.AuthFile)
	}
	switch c.AuthType {
	case "trust", authCert:
	case authHBA:
		// Whether passwords are needed depends on the file's methods:
		// the router checks that when it loads the file.
		if c.AuthHBAFile == "" {
			p.add("auth_hba_file", `required when auth_type is "hba"`)
		}
	default:
		if c.AuthFile == "" && !c.anyUserPassword() && !c.onlyEntraClients() && !c.anyAuthUser() {
			p.add("auth_type", "%q needs auth_file or users with a password", c.AuthType)
		}
	}
	if c.AuthHBAFile != "" {
		p.file("auth_hba_file", c.AuthHBAFile)
	}
	if c.anyAuthUser() && !strings.Contains(c.AuthQuery, "$1") {
		p.add("auth_query", "must take the user name as $1, as PgBouncer's does")
	}
	if c.AuthType == authCert && c.ClientTLSSSLMode != "verify-ca" && c.ClientTLSSSLMode != "verify-full" {
		// Without a verified client certificate there is no identity to
		// check: refuse rather than let clients in unverified.
		p.add("client_tls_sslmode", `auth_type = "cert" needs "verify-ca" or "verify-full" (client certificates verified against client_tls_ca_file), got %q`, c.ClientTLSSSLMode)
	}
	for i, u := range c.AdminUsers {
		if u == "" {
			p.add(fmt.Sprintf("admin_users[%d]", i), "must not be empty")
		}
	}
	for i, u := range c.StatsUsers {
		if u == "" {
			p.add(fmt.Sprintf("stats_users[%d]", i), "must not be empty")
		}
	}
}

// anyAuthUser reports whether auth_user is set globally or for a database.
func (c *Config) anyAuthUser() bool {
	if c.AuthUser != "" {
		return true
	}
	for _, db := range c.Databases {
		if db.AuthUser != "" {
			return true
		}
	}
	return false
}

// EntraClients reports whether any database or user has client_auth =
// "entra".
func (c *Config) EntraClients() bool {
	for _, db := range c.Databases {
		if db.ClientAuth == authEntra {
			return true
		}
	}
	for _, u := range c.Users {
		if u.ClientAuth == authEntra {
			return true
		}
	}
	return false
}

// onlyEntraClients reports whether every database has client_auth =
// "entra", so that auth_type's passwords are never asked for (the admin
// console aside).
func (c *Config) onlyEntraClients() bool {
	for _, db := range c.Databases {
		if db.ClientAuth != authEntra {
			return false
		}
	}
	return len(c.Databases) > 0
}

// validateClientEntra checks [client_entra] when some client logs in with
// Entra: tenants, https hosts, principals, and client TLS that is required.
func (c *Config) validateClientEntra(p *problems) {
	ce := c.ClientEntra
	p.nonNegativeDurations("client_entra.", ce)
	if !c.EntraClients() {
		if len(ce.Tenants) > 0 || len(ce.Roles) > 0 {
			p.add("client_entra", `set, but no database or user has client_auth = "entra"`)
		}
		return
	}
	switch c.ClientTLSSSLMode {
	case "require", "verify-ca", "verify-full":
	default:
		// The token is a bearer credential: it must never cross the
		// network in clear text, so pgferry refuses to ask for it there.
		p.add("client_tls_sslmode", `client_auth = "entra" receives tokens as passwords and needs "require", "verify-ca" or "verify-full", got %q`, c.ClientTLSSSLMode)
	}
	if len(ce.Tenants) == 0 {
		p.add("client_entra.tenants", `required when client_auth = "entra" is used`)
	}
	for i, t := range ce.Tenants {
		if !isGUID(t) {
			p.add(fmt.Sprintf("client_entra.tenants[%d]", i), "must be a tenant id (a GUID; token issuers name the tenant by id), got %q", t)
		}
	}
	for _, f := range []struct{ key, v string }{
		{"client_entra.authority_host", ce.AuthorityHost},
		{"client_entra.v1_issuer_host", ce.V1IssuerHost},
	} {
		if u, err := url.Parse(f.v); f.v != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
			p.add(f.key, "must be an https:// URL, got %q", f.v)
		}
	}
	for i, a := range ce.Audiences {
		if strings.TrimSpace(a) == "" {
			p.add(fmt.Sprintf("client_entra.audiences[%d]", i), "must not be empty")
		}
	}
	if len(ce.Roles) == 0 {
		p.add("client_entra.roles", `required when client_auth = "entra" is used: map user names to identities`)
	}
	for _, role := range sortedKeys(ce.Roles) {
		key := "client_entra.roles." + quoteKey(role)
		if len(ce.Roles[role]) == 0 {
			p.add(key, "lists no identity")
		}
		for i, pr := range ce.Roles[role] {
			kind, value, ok := strings.Cut(pr, ":")
			switch {
			case !ok || strings.TrimSpace(value) == "":
				p.add(fmt.Sprintf("%s[%d]", key, i), "must be kind:value (user:, app:, object: or group:), got %q", pr)
			case kind != "user" && kind != "app" && kind != "object" && kind != "group":
				p.add(fmt.Sprintf("%s[%d]", key, i), "unknown kind %q (user, app, object or group)", kind)
			}
		}
	}
}

// isGUID reports whether s is 8-4-4-4-12 hex digits.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}

func (c *Config) anyUserPassword() bool {
	for _, u := range c.Users {
		if u.Password != "" {
			return true
		}
	}
	return false
}

func (c *Config) validatePooling(p *problems) {
	p.oneOf("pool_mode", c.PoolMode, poolModes)
	p.atLeast("default_pool_size", int64(c.DefaultPoolSize), 1)
	p.between("min_pool_size", int64(c.MinPoolSize), 0, int64(max(c.DefaultPoolSize, 0)))
	p.atLeast("reserve_pool_size", int64(c.ReservePoolSize), 0)
	p.atLeast("max_client_conn", int64(c.MaxClientConn), 1)
	p.atLeast("max_db_connections", int64(c.MaxDBConnections), 0)
	p.atLeast("max_user_connections", int64(c.MaxUserConnections), 0)
	p.atLeast("fleet_max_db_connections", int64(c.FleetMaxDBConnections), 0)
	p.atLeast("fleet_max_user_connections", int64(c.FleetMaxUserConnections), 0)
	p.atLeast("max_prepared_statements", int64(c.MaxPreparedStatements), 0)
	p.atLeast("max_packet_size", int64(c.MaxPacketSize), minMaxPacketSize)
	for i, s := range c.TrackExtraParameters {
		if s == "" {
			p.add(fmt.Sprintf("track_extra_parameters[%d]", i), "must not be empty")
		}
	}
	for i, s := range c.IgnoreStartupParameters {
		if s == "" {
			p.add(fmt.Sprintf("ignore_startup_parameters[%d]", i), "must not be empty")
		}
	}
}

func (c *Config) validateTLS(p *problems) {
	p.oneOf("client_tls_sslmode", c.ClientTLSSSLMode, sslModes)
	if c.ClientTLSSSLMode != "disable" {
		for _, f := range []struct{ key, path string }{
			{"client_tls_cert_file", c.ClientTLSCertFile},
			{"client_tls_key_file", c.ClientTLSKeyFile},
		} {
			if f.path == "" {
				p.add(f.key, "required when client_tls_sslmode is %q", c.ClientTLSSSLMode)
			}
		}
	}
	if (c.ClientTLSSSLMode == "verify-ca" || c.ClientTLSSSLMode == "verify-full") && c.ClientTLSCAFile == "" {
		p.add("client_tls_ca_file", "required when client_tls_sslmode is %q", c.ClientTLSSSLMode)
	}
	p.oneOf("server_tls_sslmode", c.ServerTLSSSLMode, sslModes)
	for _, f := range []struct{ key, value string }{
		{"client_tls_protocols", c.ClientTLSProtocols},
		{"server_tls_protocols", c.ServerTLSProtocols},
	} {
		if _, _, err := TLSVersions(f.value); err != nil {
			p.add(f.key, "%v", err)
		}
	}
	for _, f := range []struct{ key, value string }{
		{"client_tls_ciphers", c.ClientTLSCiphers},
		{"server_tls_ciphers", c.ServerTLSCiphers},
	} {
		if _, err := TLSCipherSuites(f.value); err != nil {
			p.add(f.key, "%v", err)
		}
	}
	if _, err := TLSCurves(c.ClientTLSECDHCurve); err != nil {
		p.add("client_tls_ecdhcurve", "%v", err)
	}
	if (c.ServerTLSCertFile == "") != (c.ServerTLSKeyFile == "") {
		p.add("server_tls_cert_file", "server_tls_cert_file and server_tls_key_file must be set together")
	}
	for _, f := range []struct{ key, path string }{
		{"client_tls_cert_file", c.ClientTLSCertFile},
		{"client_tls_key_file", c.ClientTLSKeyFile},
		{"client_tls_ca_file", c.ClientTLSCAFile},
		{"server_tls_ca_file", c.ServerTLSCAFile},
		{"server_tls_cert_file", c.ServerTLSCertFile},
		{"server_tls_key_file", c.ServerTLSKeyFile},
	} {
		if f.path != "" {
			p.file(f.key, f.path)
		}
	}
}

// AdminDatabases are the names of the admin console's virtual database:
// PgBouncer's "pgbouncer", and "pgferry". No [databases] entry may take them.
var AdminDatabases = map[string]bool{"pgbouncer": true, "pgferry": true}

// tcpHost refuses a server host pgferry cannot dial: PgBouncer (and libpq)
// take a host beginning with "/" for a unix socket directory and one
// beginning with "@" for a socket in the abstract namespace, which a
// pgbouncer.ini may hold; pgferry dials TCP only, and would otherwise fail
// every login at run time.
func (p *problems) tcpHost(key, h string) {
	switch {
	case strings.HasPrefix(h, "/"):
		p.add(key, "%q is a unix socket directory; pgferry reaches servers over TCP only (give the server's TCP address, e.g. 127.0.0.1)", h)
	case strings.HasPrefix(h, "@"):
		p.add(key, "%q is a unix socket in the abstract namespace; pgferry reaches servers over TCP only", h)
	}
}

// validateDatabase checks one [databases] entry. aliases maps each
// readonly_alias seen so far to the database declaring it.
func (c *Config) validateDatabase(p *problems, name string, db Database, aliases map[string]string) {
	key := func(k string) string { return dbKey(name, k) }
	if name == "" {
		p.add(dbKey(name), "database name must not be empty")
	}
	if AdminDatabases[name] {
		// PgBouncer refuses it too (loader.c: "database name is reserved").
		p.add(dbKey(name), "the name is the admin console's; clients asking for it reach the console, never this database")
	}
	if strings.TrimSpace(db.Host) == "" {
		p.add(key("host"), "required")
	} else {
		for i, h := range strings.Split(db.Host, ",") {
			if strings.TrimSpace(h) == "" {
				p.add(key("host"), "host %d of the list %q is empty", i+1, db.Host)
			}
			p.tcpHost(key("host"), strings.TrimSpace(h))
		}
	}
	p.between(key("port"), int64(db.Port), 1, 65535)
	if db.PoolSize == 0 {
		// Only an explicit 0 gets here (fillDerived fills a missing one).
		p.add(key("pool_size"), "0 (PgBouncer: no limit per pool, only max_db_connections and max_user_connections) is not supported by pgferry; "+
			"set the number of server connections the pool may open, or leave the key out for default_pool_size")
	} else {
		p.atLeast(key("pool_size"), int64(db.PoolSize), 1)
	}
	p.between(key("min_pool_size"), int64(db.MinPoolSize), 0, int64(max(db.PoolSize, 0)))
	p.atLeast(key("reserve_pool"), int64(db.ReservePool), 0)
	p.atLeast(key("max_db_connections"), int64(db.MaxDBConnections), 0)
	p.atLeast(key("fleet_max_db_connections"), int64(db.FleetMaxDBConnections), 0)
	p.oneOf(key("pool_mode"), db.PoolMode, poolModes)
	p.oneOf(key("sslmode"), db.SSLMode, sslModes)
	if db.SSLRootCert != "" && db.SSLRootCert != c.ServerTLSCAFile {
		p.file(key("sslrootcert"), db.SSLRootCert)
	}
	p.oneOf(key("auth"), db.Auth, dbAuths)
	if db.ClientAuth != "" {
		p.oneOf(key("client_auth"), db.ClientAuth, clientAuths)
	}
	if db.Auth == authEntra {
		validateEntra(p, name, db)
	} else {
		for _, f := range []struct{ key, v string }{
			{"entra_credential", db.EntraCredential},
			{"entra_client_id", db.EntraClientID},
			{"entra_tenant_id", db.EntraTenantID},
			{"entra_client_secret_file", db.EntraClientSecretFile},
			{"entra_client_secret_env", db.EntraClientSecretEnv},
			{"entra_token_file", db.EntraTokenFile},
			{"entra_authority_host", db.EntraAuthorityHost},
			{"entra_scope", db.EntraScope},
		} {
			if f.v != "" {
				p.add(key(f.key), `only used with auth = "entra", but auth is %q`, db.Auth)
			}
		}
	}

	for i, r := range db.Replicas {
		rkey := func(k string) string { return fmt.Sprintf("%s[%d].%s", key("replicas"), i, k) }
		if strings.TrimSpace(r.Host) == "" {
			p.add(rkey("host"), "required")
		}
		p.tcpHost(rkey("host"), strings.TrimSpace(r.Host))
		p.between(rkey("port"), int64(r.Port), 1, 65535)
		p.atLeast(rkey("weight"), int64(r.Weight), 1)
	}
	p.atLeast(key("max_replica_lag_bytes"), db.MaxReplicaLagBytes, 0)
	p.nonNegativeDurations(dbKey(name)+".", db)
	if db.LagCheckInterval <= 0 {
		p.add(key("lag_check_interval"), "must be positive, got %s", db.LagCheckInterval)
	}
	p.oneOf(key("replica_fallback"), db.ReplicaFallback, replicaFallbacks)

	if a := db.ReadOnlyAlias; a != "" {
		switch other, dup := aliases[a]; {
		case a == wildcardDatabase:
			p.add(key("readonly_alias"), `must not be "*"`)
		case a == name:
			p.add(key("readonly_alias"), "must differ from the database's own name")
		case dup:
			p.add(key("readonly_alias"), "%q is already the readonly_alias of database %q", a, other)
		default:
			if _, exists := c.Databases[a]; exists {
				p.add(key("readonly_alias"), "%q collides with the database of the same name", a)
			}
		}
		aliases[a] = name
	}
}

// validateEntra checks the settings of a database with auth = "entra"; see
// docs/entra-id.md for the credential types.
func validateEntra(p *problems, name string, db Database) {
	key := func(k string) string { return dbKey(name, k) }
	switch db.SSLMode {
	case "disable", "allow", "prefer":
		p.add(key("sslmode"), `auth = "entra" sends a token as password and needs sslmode require, verify-ca or verify-full`)
	}
	if db.Password != "" || db.PasswordFile != "" {
		p.add(key("password"), `must not be set with auth = "entra", which uses a token as the password`)
	}
	p.oneOf(key("entra_credential"), db.EntraCredential, entraCredentials)
	if db.EntraCredential == entraClientSecret {
		if db.EntraTenantID == "" {
			p.add(key("entra_tenant_id"), `required with entra_credential = "client_secret"`)
		}
		if db.EntraClientID == "" {
			p.add(key("entra_client_id"), `required with entra_credential = "client_secret"`)
		}
		switch {
		case db.EntraClientSecretFile == "" && db.EntraClientSecretEnv == "":
			p.add(key("entra_client_secret_file"), `entra_client_secret_file or entra_client_secret_env is required with entra_credential = "client_secret"`)
		case db.EntraClientSecretFile != "" && db.EntraClientSecretEnv != "":
			p.add(key("entra_client_secret_file"), "entra_client_secret_file and entra_client_secret_env are mutually exclusive")
		case db.EntraClientSecretFile != "":
			p.file(key("entra_client_secret_file"), db.EntraClientSecretFile)
		}
	} else {
		if db.EntraClientSecretFile != "" {
			p.add(key("entra_client_secret_file"), `only used with entra_credential = "client_secret"`)
		}
		if db.EntraClientSecretEnv != "" {
			p.add(key("entra_client_secret_env"), `only used with entra_credential = "client_secret"`)
		}
	}
	if db.EntraTokenFile != "" {
		if db.EntraCredential != entraWorkloadIdentity {
			p.add(key("entra_token_file"), `only used with entra_credential = "workload_identity"`)
		} else {
			p.file(key("entra_token_file"), db.EntraTokenFile)
		}
	}
	if h := db.EntraAuthorityHost; h != "" {
		// azidentity rejects non-https authority hosts at first use;
		// failing at load time names the key instead.
		if u, err := url.Parse(h); err != nil || u.Scheme != "https" || u.Host == "" {
			p.add(key("entra_authority_host"), "must be an https:// URL, got %q", h)
		}
	}
	if db.EntraScope == "" {
		p.add(key("entra_scope"), "must not be empty")
	}
}

// warnings returns advisory messages about a valid config.
func (c *Config) warnings() []string {
	var w []string
	if c.AuthType == "plain" {
		w = append(w, `auth_type: "plain" sends client passwords in cleartext and is deprecated in PgBouncer; prefer "scram-sha-256"`)
	}
	if c.AuthHBAFile != "" && c.AuthType != authHBA {
		w = append(w, fmt.Sprintf(`auth_hba_file: not used because auth_type is %q, not "hba"`, c.AuthType))
	}
	for _, name := range sortedKeys(c.Databases) {
		db := c.Databases[name]
		if db.ReadOnlyAlias != "" && len(db.Replicas) == 0 {
			w = append(w, fmt.Sprintf("%s: database has no replicas, so %q sessions follow replica_fallback = %q",
				dbKey(name, "readonly_alias"), db.ReadOnlyAlias, db.ReplicaFallback))
		}
	}
	return w
}
