package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// envMap returns a lookup function backed by m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// minimalTOML is the smallest valid TOML config; tests append to it.
const minimalTOML = "auth_type = \"trust\"\n"

const appDB = "[databases.app]\nhost = \"127.0.0.1\"\n"

// mustParse parses a TOML document that must be valid.
func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, _, err := Parse([]byte(doc), "toml", nil)
	if err != nil {
		t.Fatalf("Parse: %v\n--- input ---\n%s", err, doc)
	}
	return c
}

func TestDefaultHoldsDocumentedValues(t *testing.T) {
	c := Default()
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"listen_addr", c.ListenAddr, "127.0.0.1"},
		{"listen_port", c.ListenPort, 6432},
		{"auth_type", c.AuthType, "scram-sha-256"},
		{"pool_mode", c.PoolMode, "transaction"},
		{"default_pool_size", c.DefaultPoolSize, 20},
		{"max_client_conn", c.MaxClientConn, 10000},
		{"reserve_pool_timeout", c.ReservePoolTimeout.Std(), 5 * time.Second},
		{"server_lifetime", c.ServerLifetime.Std(), time.Hour},
		{"server_idle_timeout", c.ServerIdleTimeout.Std(), 10 * time.Minute},
		{"query_wait_timeout", c.QueryWaitTimeout.Std(), 2 * time.Minute},
		{"client_login_timeout", c.ClientLoginTimeout.Std(), time.Minute},
		{"cancel_wait_timeout", c.CancelWaitTimeout.Std(), 10 * time.Second},
		{"shutdown_timeout", c.ShutdownTimeout.Std(), 30 * time.Second},
		{"server_reset_query", c.ServerResetQuery, "DISCARD ALL"},
		{"max_prepared_statements", c.MaxPreparedStatements, 200},
		{"track_extra_parameters", c.TrackExtraParameters, []string{"IntervalStyle", "search_path"}},
		{"pin_on_session_state", c.PinOnSessionState, true},
		{"relay_loop", c.RelayLoop, defaultRelayLoop},
		{"max_packet_size", c.MaxPacketSize, 2147483647},
		{"client_tls_sslmode", c.ClientTLSSSLMode, "disable"},
		{"server_tls_sslmode", c.ServerTLSSSLMode, "prefer"},
		{"log_level", c.LogLevel, "info"},
		{"log_format", c.LogFormat, "json"},
		{"unix_socket_dir", c.UnixSocketDir, ""},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestDefaultsSurviveAFileThatOmitsTheKeys(t *testing.T) {
	c := mustParse(t, minimalTOML+appDB)
	if !c.PinOnSessionState {
		t.Error("pin_on_session_state lost its default true")
	}
	db := c.Databases["app"]
	want := Database{
		Host: "127.0.0.1", Port: 5432, DBName: "app", PoolSize: 20, PoolMode: "transaction",
		SSLMode: "prefer", Auth: "password", MaxReplicaLagBytes: 16 << 20,
		MaxReplicaLag: Duration(10 * time.Second), LagCheckInterval: Duration(time.Second),
		ReplicaFallback: "primary", ReadYourWrites: Duration(2 * time.Second),
	}
	if !reflect.DeepEqual(db, want) {
		t.Errorf("derived database defaults\n got %+v\nwant %+v", db, want)
	}
}

func TestPerDatabaseSettingsInheritTheGlobals(t *testing.T) {
	c := mustParse(t, minimalTOML+`
default_pool_size = 7
min_pool_size = 2
reserve_pool_size = 3
max_db_connections = 9
pool_mode = "session"
server_tls_sslmode = "require"
`+appDB+`
[databases.other]
host = "h"
pool_size = 4
min_pool_size = 1
pool_mode = "transaction"
sslmode = "disable"
`)
	app, other := c.Databases["app"], c.Databases["other"]
	if app.PoolSize != 7 || app.MinPoolSize != 2 || app.ReservePool != 3 || app.MaxDBConnections != 9 ||
		app.PoolMode != "session" || app.SSLMode != "require" {
		t.Errorf("app did not inherit globals: %+v", app)
	}
	if other.PoolSize != 4 || other.MinPoolSize != 1 || other.PoolMode != "transaction" || other.SSLMode != "disable" {
		t.Errorf("other lost its overrides: %+v", other)
	}
}

func TestDurationAcceptsSecondsAndGoUnits(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain seconds as in pgbouncer.ini", in: "120", want: 120 * time.Second},
		{name: "fractional seconds", in: "0.5", want: 500 * time.Millisecond},
		{name: "zero", in: "0", want: 0},
		{name: "go minutes", in: "2m", want: 2 * time.Minute},
		{name: "go milliseconds", in: "500ms", want: 500 * time.Millisecond},
		{name: "compound go duration", in: "1h30m", want: 90 * time.Minute},
		{name: "surrounding blanks are ignored", in: " 15 ", want: 15 * time.Second},
		{name: "negative decodes for Validate to reject", in: "-1", want: -time.Second},
		{name: "empty is an error", in: "", wantErr: true},
		{name: "words are an error", in: "soon", wantErr: true},
		{name: "NaN is an error", in: "NaN", wantErr: true},
		{name: "infinity is an error", in: "Inf", wantErr: true},
		{name: "overflow is an error", in: "1e300", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("UnmarshalText(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && d.Std() != tc.want {
				t.Errorf("UnmarshalText(%q) = %v, want %v", tc.in, d.Std(), tc.want)
			}
		})
	}
}

func TestDurationDecodesFromTOMLIntegersFloatsAndStrings(t *testing.T) {
	tests := []struct {
		name string
		line string
		want time.Duration
	}{
		{name: "integer seconds", line: "query_wait_timeout = 120", want: 120 * time.Second},
		{name: "float seconds", line: "query_wait_timeout = 0.25", want: 250 * time.Millisecond},
		{name: "go string", line: `query_wait_timeout = "2m"`, want: 2 * time.Minute},
		{name: "seconds string", line: `query_wait_timeout = "90"`, want: 90 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, minimalTOML+tc.line+"\n"+appDB)
			if got := c.QueryWaitTimeout.Std(); got != tc.want {
				t.Errorf("query_wait_timeout = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDurationMarshalsInShortGoForm(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{time.Hour, "1h"},
		{10 * time.Minute, "10m"},
		{90 * time.Minute, "1h30m"},
		{61 * time.Second, "1m1s"},
		{500 * time.Millisecond, "500ms"},
		{time.Hour + time.Second, "1h0m1s"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			b, err := Duration(tc.in).MarshalText()
			if err != nil || string(b) != tc.want {
				t.Fatalf("MarshalText(%v) = %q, %v; want %q", tc.in, b, err, tc.want)
			}
			var back Duration
			if err := back.UnmarshalText(b); err != nil || back.Std() != tc.in {
				t.Errorf("round trip of %q = %v, %v", b, back.Std(), err)
			}
		})
	}
}

func TestTOMLDecodeErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{name: "misspelt database key", doc: minimalTOML + appDB + "hots = \"x\"\n", want: `unknown key "databases.app.hots"`},
		{name: "unknown top-level key", doc: "listen_prot = 1\n" + minimalTOML + appDB, want: `unknown key "listen_prot"`},
		{name: "unknown replica key", doc: minimalTOML + appDB + "[[databases.app.replicas]]\nhost = \"r\"\nwieght = 2\n", want: `unknown key "databases.app.replicas.wieght"`},
		{name: "string where an integer belongs", doc: minimalTOML + appDB + "port = \"x\"\n", want: "databases.app.port"},
		{name: "bad duration", doc: "query_wait_timeout = \"soon\"\n" + minimalTOML + appDB, want: "query_wait_timeout"},
		{name: "boolean where a duration belongs", doc: "server_lifetime = true\n" + minimalTOML + appDB, want: "server_lifetime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.doc), "toml", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesTheKeyOfEachProblem(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		top  string // top-level keys
		db   string // keys of [databases.app]
		more string // further tables
		want string
	}{
		{name: "port out of range", db: "port = 70000", want: "databases.app.port: must be between 1 and 65535, got 70000"},
		{name: "unix socket host", db: `host = "/var/run/postgresql"`, want: `databases.app.host: "/var/run/postgresql" is a unix socket directory; pgferry reaches servers over TCP only`},
		{name: "abstract unix socket in a host list", db: `host = "db1,@pg"`, want: `databases.app.host: "@pg" is a unix socket`},
		{name: "listen port out of range", top: "listen_port = -1", want: "listen_port: must be between 0 and 65535"},
		{name: "unknown pool mode", top: `pool_mode = "statement"`, want: `pool_mode: must be one of "transaction", "session", got "statement"`},
		{name: "unknown database pool mode", db: `pool_mode = "stmt"`, want: "databases.app.pool_mode"},
		{name: "negative pool size", db: "pool_size = -1", want: "databases.app.pool_size: must be at least 1"},
		{name: "min pool above pool size", db: "pool_size = 2\nmin_pool_size = 3", want: "databases.app.min_pool_size: must be between 0 and 2"},
		{name: "global min pool above default", top: "min_pool_size = 30", want: "min_pool_size: must be between 0 and 20"},
		{name: "negative reserve pool", top: "reserve_pool_size = -1", want: "reserve_pool_size: must be at least 0"},
		{name: "negative duration", top: "query_timeout = -5", want: "query_timeout: must not be negative"},
		{name: "negative database duration", db: "read_your_writes = \"-1s\"", want: "databases.app.read_your_writes: must not be negative"},
		{name: "unknown auth type", top: `auth_type = "ldap"`, want: "auth_type: must be one of"},
		{name: "password auth without secrets", top: `auth_type = "md5"`, want: `auth_type: "md5" needs auth_file or users with a password`},
		{name: "missing auth file", top: `auth_file = "` + missing + `"`, want: "auth_file: stat " + missing},
		{name: "hba auth without a file", top: `auth_type = "hba"`, want: `auth_hba_file: required when auth_type is "hba"`},
		{name: "missing hba file", top: "auth_type = \"hba\"\nauth_hba_file = \"" + missing + "\"", want: "auth_hba_file: stat " + missing},
		{name: "cert auth without verified client tls", top: `auth_type = "cert"`, want: `client_tls_sslmode: auth_type = "cert" needs "verify-ca" or "verify-full"`},
		{name: "cert auth with unverified client tls", top: "auth_type = \"cert\"\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", want: `client_tls_sslmode: auth_type = "cert" needs "verify-ca" or "verify-full" (client certificates verified against client_tls_ca_file), got "require"`},
		{name: "cert auth verify-ca without ca", top: "auth_type = \"cert\"\nclient_tls_sslmode = \"verify-ca\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", want: `client_tls_ca_file: required when client_tls_sslmode is "verify-ca"`},
		{name: "bad cidr", top: `allow_cidrs = ["10.0.0.0/8", "nonsense"]`, want: `allow_cidrs[1]: invalid CIDR "nonsense"`},
		{name: "metrics listen without port", top: `metrics_listen = "localhost"`, want: "metrics_listen: must be host:port"},
		{name: "debug listen bad port", top: `debug_listen = "localhost:http"`, want: "debug_listen: port must be a number"},
		{name: "listen addr list", top: `listen_addr = "a, b"`, want: "listen_addr: must be a single address"},
		{name: "small max packet size", top: "max_packet_size = 100", want: "max_packet_size: must be at least 1024"},
		{name: "unknown log level", top: `log_level = "trace"`, want: "log_level: must be one of"},
		{name: "unknown log format", top: `log_format = "text"`, want: "log_format: must be one of"},
		{name: "client tls without files", top: `client_tls_sslmode = "require"`, want: `client_tls_cert_file: required when client_tls_sslmode is "require"`},
		{name: "client tls without key", top: `client_tls_sslmode = "require"`, want: "client_tls_key_file: required"},
		{name: "client verify-full without ca", top: `client_tls_sslmode = "verify-full"` + "\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", want: "client_tls_ca_file: required"},
		{name: "client tls cert missing on disk", top: `client_tls_sslmode = "require"` + "\nclient_tls_cert_file = \"" + missing + "\"\nclient_tls_key_file = \"" + certFile + "\"", want: "client_tls_cert_file: stat"},
		{name: "unknown server tls mode", top: `server_tls_sslmode = "on"`, want: "server_tls_sslmode: must be one of"},
		{name: "server cert without key", top: `server_tls_cert_file = "` + certFile + `"`, want: "server_tls_cert_file: server_tls_cert_file and server_tls_key_file must be set together"},
		{name: "missing host", db: `host = ""`, want: "databases.app.host: required"},
		{name: "empty host in failover list", db: `host = "a,,b"`, want: "databases.app.host: host 2 of the list"},
		{name: "unknown sslmode", db: `sslmode = "on"`, want: "databases.app.sslmode: must be one of"},
		{name: "unknown database auth", db: `auth = "kerberos"`, want: "databases.app.auth: must be one of"},
		{name: "entra over plaintext", db: "auth = \"entra\"\nsslmode = \"prefer\"", want: `databases.app.sslmode: auth = "entra" sends a token as password and needs sslmode require, verify-ca or verify-full`},
		{name: "entra with a password", db: "auth = \"entra\"\nsslmode = \"require\"\npassword = \"x\"", want: "databases.app.password: must not be set"},
		{name: "unknown entra credential", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_credential = \"magic\"", want: "databases.app.entra_credential: must be one of"},
		{name: "entra client secret without tenant", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_credential = \"client_secret\"", want: "databases.app.entra_tenant_id: required"},
		{name: "entra client secret without client id", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_credential = \"client_secret\"", want: "databases.app.entra_client_id: required"},
		{name: "entra client secret without secret", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_credential = \"client_secret\"", want: "databases.app.entra_client_secret_file: entra_client_secret_file or entra_client_secret_env is required"},
		{name: "entra client secret file missing", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_credential = \"client_secret\"\nentra_tenant_id = \"t\"\nentra_client_id = \"c\"\nentra_client_secret_file = \"" + missing + "\"", want: "databases.app.entra_client_secret_file: stat"},
		{name: "entra authority over http", db: "auth = \"entra\"\nsslmode = \"require\"\nentra_authority_host = \"http://login.example\"", want: "databases.app.entra_authority_host: must be an https:// URL"},
		{name: "entra key without entra auth", db: `entra_client_id = "x"`, want: `databases.app.entra_client_id: only used with auth = "entra"`},
		{name: "database named like the admin console", more: "[databases.pgbouncer]\nhost = \"h\"", want: `databases.pgbouncer: the name is the admin console's; clients asking for it reach the console, never this database`},
		{name: "database named like pgferry's admin console", more: "[databases.pgferry]\nhost = \"h\"", want: `databases.pgferry: the name is the admin console's`},
		{name: "replica without host", more: "[[databases.app.replicas]]\nport = 1", want: "databases.app.replicas[0].host: required"},
		{name: "replica port out of range", more: "[[databases.app.replicas]]\nhost = \"r\"\nport = 99999", want: "databases.app.replicas[0].port: must be between 1 and 65535"},
		{name: "negative replica weight", more: "[[databases.app.replicas]]\nhost = \"r\"\nweight = -1", want: "databases.app.replicas[0].weight: must be at least 1"},
		{name: "negative lag bytes", db: "max_replica_lag_bytes = -1", want: "databases.app.max_replica_lag_bytes: must be at least 0"},
		{name: "unknown replica fallback", db: `replica_fallback = "random"`, want: "databases.app.replica_fallback: must be one of"},
		{name: "alias collides with a database", db: `readonly_alias = "other"`, more: "[databases.other]\nhost = \"h\"", want: `databases.app.readonly_alias: "other" collides with the database of the same name`},
		{name: "alias is the database itself", db: `readonly_alias = "app"`, want: "databases.app.readonly_alias: must differ"},
		{name: "alias used twice", db: `readonly_alias = "ro"`, more: "[databases.other]\nhost = \"h\"\nreadonly_alias = \"ro\"", want: `databases.other.readonly_alias: "ro" is already the readonly_alias of database "app"`},
		{name: "empty database name", more: "[databases.\"\"]\nhost = \"h\"", want: `databases."": database name must not be empty`},
		{name: "wildcard needs a host too", more: "[databases.\"*\"]\nport = 5432", want: `databases."*".host: required`},
		{name: "password and password file", db: "password = \"x\"\npassword_file = \"" + certFile + "\"", want: "databases.app.password_file: password and password_file are mutually exclusive"},
		{name: "missing password file", db: "password_file = \"" + missing + "\"", want: "databases.app.password_file: open " + missing},
		{name: "unknown user pool mode", more: "[users.bob]\npool_mode = \"x\"", want: "users.bob.pool_mode: must be one of"},
		{name: "unknown client auth", db: `client_auth = "token"`, want: `databases.app.client_auth: must be one of "entra", got "token"`},
		{name: "unknown user client auth", more: "[users.bob]\nclient_auth = \"x\"", want: "users.bob.client_auth: must be one of"},
		{name: "entra clients without client tls", db: `client_auth = "entra"`, more: "[client_entra]\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\n[client_entra.roles]\napp = [\"app:abc\"]", want: `client_tls_sslmode: client_auth = "entra" receives tokens as passwords and needs "require", "verify-ca" or "verify-full", got "disable"`},
		{name: "entra clients with optional client tls", top: "client_tls_sslmode = \"prefer\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra]\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\n[client_entra.roles]\napp = [\"app:abc\"]", want: `client_tls_sslmode: client_auth = "entra" receives tokens as passwords`},
		{name: "entra clients without tenants", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, want: "client_entra.tenants: required"},
		{name: "entra clients without roles", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, want: "client_entra.roles: required"},
		{name: "entra tenant by domain name", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra]\ntenants = [\"contoso.com\"]", want: `client_entra.tenants[0]: must be a tenant id (a GUID`},
		{name: "entra authority over http", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", more: "[client_entra]\nauthority_host = \"http://login.example\"", db: `client_auth = "entra"`, want: `client_entra.authority_host: must be an https:// URL`},
		{name: "entra v1 issuer over http", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", more: "[client_entra]\nv1_issuer_host = \"http://sts.example\"", db: `client_auth = "entra"`, want: `client_entra.v1_issuer_host: must be an https:// URL`},
		{name: "entra principal without kind", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra.roles]\napp = [\"alice@contoso.com\"]", want: `client_entra.roles.app[0]: must be kind:value`},
		{name: "entra principal of unknown kind", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra.roles]\napp = [\"role:x\"]", want: `client_entra.roles.app[0]: unknown kind "role"`},
		{name: "entra role without identities", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra.roles]\napp = []", want: `client_entra.roles.app: lists no identity`},
		{name: "negative entra skew", top: "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"", db: `client_auth = "entra"`, more: "[client_entra]\nclock_skew = \"-1s\"", want: `client_entra.clock_skew: must not be negative`},
		{name: "client entra unused", more: "[client_entra]\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\n[client_entra.roles]\napp = [\"app:abc\"]", want: `client_entra: set, but no database or user has client_auth = "entra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.top + "\n"
			if !strings.Contains(tc.top, "auth_type") {
				doc += minimalTOML
			}
			doc += "[databases.app]\n"
			if !strings.Contains(tc.db, "host =") {
				doc += "host = \"127.0.0.1\"\n"
			}
			doc += tc.db + "\n" + tc.more + "\n"
			_, _, err := Parse([]byte(doc), "toml", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %q\n--- input ---\n%s", err, tc.want, doc)
			}
		})
	}
}

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	doc := "listen_port = 70000\npool_mode = \"x\"\n" + minimalTOML + appDB + "port = 70000\n"
	_, _, err := Parse([]byte(doc), "toml", nil)
	if err == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	for _, want := range []string{"listen_port:", "pool_mode:", "databases.app.port:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestValidateRequiresADatabase(t *testing.T) {
	_, _, err := Parse([]byte(minimalTOML), "toml", nil)
	if err == nil || !strings.Contains(err.Error(), "databases: at least one database") {
		t.Fatalf("error = %v, want a missing-databases error", err)
	}
}

func TestEnvOverridesApplyToBothFormats(t *testing.T) {
	env := map[string]string{
		"PGFERRY_LISTEN_PORT":               "6433",
		"PGFERRY_MAX_CLIENT_CONN":           "5000",
		"PGFERRY_ADMIN_USERS":               "a, b",
		"PGFERRY_QUERY_WAIT_TIMEOUT":        "30",
		"PGFERRY_PIN_ON_SESSION_STATE":      "off",
		"PGFERRY_LOG_LEVEL":                 "debug",
		"PGFERRY_DEFAULT_POOL_SIZE":         "11",
		"PGFERRY_IGNORE_STARTUP_PARAMETERS": "",
	}
	inputs := []struct {
		name, format, doc string
	}{
		{name: "toml", format: "toml", doc: minimalTOML + "listen_port = 1\nmax_client_conn = 10\n" + appDB},
		{name: "ini", format: "ini", doc: "[pgbouncer]\nauth_type = trust\nlisten_port = 1\nmax_client_conn = 10\n[databases]\napp = host=127.0.0.1\n"},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			c, _, err := Parse([]byte(in.doc), in.format, envMap(env))
			if err != nil {
				t.Fatal(err)
			}
			if c.ListenPort != 6433 || c.MaxClientConn != 5000 || c.LogLevel != "debug" || c.PinOnSessionState {
				t.Errorf("scalar overrides not applied: port=%d max_client_conn=%d log_level=%s pin=%v",
					c.ListenPort, c.MaxClientConn, c.LogLevel, c.PinOnSessionState)
			}
			if !slices.Equal(c.AdminUsers, []string{"a", "b"}) {
				t.Errorf("admin_users = %q, want [a b]", c.AdminUsers)
			}
			if c.IgnoreStartupParameters == nil || len(c.IgnoreStartupParameters) != 0 {
				t.Errorf("ignore_startup_parameters = %#v, want an empty list", c.IgnoreStartupParameters)
			}
			if c.QueryWaitTimeout.Std() != 30*time.Second {
				t.Errorf("query_wait_timeout = %v, want 30s", c.QueryWaitTimeout)
			}
			if got := c.Databases["app"].PoolSize; got != 11 {
				t.Errorf("databases.app.pool_size = %d, want the overridden default 11", got)
			}
		})
	}
}

func TestBadEnvValueNamesTheVariable(t *testing.T) {
	tests := []struct {
		name, variable, value string
	}{
		{name: "integer", variable: "PGFERRY_LISTEN_PORT", value: "lots"},
		{name: "boolean", variable: "PGFERRY_SO_REUSEPORT", value: "maybe"},
		{name: "duration", variable: "PGFERRY_SERVER_LIFETIME", value: "forever"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(minimalTOML+appDB), "toml", envMap(map[string]string{tc.variable: tc.value}))
			if err == nil || !strings.Contains(err.Error(), tc.variable) {
				t.Fatalf("error = %v, want it to name %s", err, tc.variable)
			}
		})
	}
}

func TestEnvOverrideIsValidated(t *testing.T) {
	_, _, err := Parse([]byte(minimalTOML+appDB), "toml", envMap(map[string]string{"PGFERRY_LISTEN_PORT": "70000"}))
	if err == nil || !strings.Contains(err.Error(), "listen_port: must be between") {
		t.Fatalf("error = %v, want listen_port validation error", err)
	}
}

func TestPgBouncerINIConvertsAndRoundTripsThroughTOML(t *testing.T) {
	c, warnings, err := LoadWithEnv(filepath.Join("testdata", "pgbouncer.ini"), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings := []string{
		"databases.reports.host: pgferry takes a host list for failover: each new server connection goes to the first host " +
			"that accepts writes; PgBouncer spreads new connections over all the hosts in turn (load_balance_hosts, " +
			"round-robin by default) whether they accept writes or not. List read replicas under replicas (TOML) instead",
		"pgbouncer.logfile is not supported by pgferry and is ignored",
		"pgbouncer.pidfile is not supported by pgferry and is ignored",
		"pgbouncer.unix_socket_mode is not supported by pgferry and is ignored",
		"pgbouncer.stats_period is not supported by pgferry and is ignored",
	}
	if !slices.Equal(warnings, wantWarnings) {
		t.Errorf("warnings\n got %q\nwant %q", warnings, wantWarnings)
	}

	absUserlist, err := filepath.Abs(filepath.Join("testdata", "userlist.txt"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"listen_addr", c.ListenAddr, "*"},
		{"listen_port", c.ListenPort, 6433},
		{"unix_socket_dir", c.UnixSocketDir, ""},
		{"auth_type", c.AuthType, "scram-sha-256"},
		{"auth_file", c.AuthFile, absUserlist},
		{"admin_users", c.AdminUsers, []string{"postgres", "admin"}},
		{"stats_users", c.StatsUsers, []string{"stats", "monitor"}},
		{"max_client_conn", c.MaxClientConn, 2000},
		{"server_login_retry", c.ServerLoginRetry.Std(), 500 * time.Millisecond},
		{"server_lifetime", c.ServerLifetime.Std(), 30 * time.Minute},
		{"server_reset_query", c.ServerResetQuery, "DISCARD ALL"},
		{"server_check_query", c.ServerCheckQuery, "select 1"},
		{"so_reuseport", c.SoReuseport, true},
		{"ignore_startup_parameters", c.IgnoreStartupParameters, []string{"extra_float_digits", "options"}},
		{"users.reporting", c.Users["reporting"], User{PoolMode: "session", MaxUserConnections: 10}},
		{"app.host", c.Databases["app"].Host, "10.0.0.10"},
		{"app.port", c.Databases["app"].Port, 5433},
		{"app.dbname", c.Databases["app"].DBName, "app_prod"},
		{"app.user", c.Databases["app"].User, "app_owner"},
		{"app.password", c.Databases["app"].Password.Reveal(), "s3cr3t 'quoted'"},
		{"app.pool_size", c.Databases["app"].PoolSize, 40},
		{"app.reserve_pool", c.Databases["app"].ReservePool, 5},
		{"app.min_pool_size", c.Databases["app"].MinPoolSize, 2},
		{"app.sslmode", c.Databases["app"].SSLMode, "require"},
		{"reports.host", c.Databases["reports"].Host, "10.0.0.11,10.0.0.12"},
		{"reports.pool_mode", c.Databases["reports"].PoolMode, "session"},
		{"reports.port", c.Databases["reports"].Port, 5432},
		{"reports.max_db_connections", c.Databases["reports"].MaxDBConnections, 50},
		{"wildcard.dbname", c.Databases["*"].DBName, ""},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}

	out, err := c.ToTOML()
	if err != nil {
		t.Fatal(err)
	}
	back, warnings, err := Parse(out, "toml", nil)
	if err != nil {
		t.Fatalf("Parse(ToTOML()): %v\n%s", err, out)
	}
	if len(warnings) != 0 {
		t.Errorf("round trip warnings: %q", warnings)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip differs\n got %+v\nwant %+v\n--- TOML ---\n%s", back, c, out)
	}
}

func TestTOMLFilesRoundTripThroughToTOML(t *testing.T) {
	files := []string{"pgferry.toml", filepath.Join("testdata", "entra.toml"), filepath.Join("testdata", "replicas.toml")}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			c, _, err := LoadWithEnv(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.ToTOML()
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := Parse(out, "toml", nil)
			if err != nil {
				t.Fatalf("Parse(ToTOML()): %v\n%s", err, out)
			}
			if !reflect.DeepEqual(back, c) {
				t.Errorf("round trip differs\n got %+v\nwant %+v\n--- TOML ---\n%s", back, c, out)
			}
		})
	}
}

func TestToTOMLKeepsPasswordFileInsteadOfItsContents(t *testing.T) {
	c, _, err := LoadWithEnv(filepath.Join("testdata", "replicas.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.ToTOML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "ferry-secret-pw") {
		t.Errorf("ToTOML wrote the contents of password_file:\n%s", out)
	}
}

func TestExampleConfigDecodes(t *testing.T) {
	c, warnings, err := Load("pgferry.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	db, ok := c.Databases["app"]
	if !ok || db.Host != "127.0.0.1" || db.Port != 5432 {
		t.Errorf("databases.app = %+v, %v; want 127.0.0.1:5432", db, ok)
	}
	want, err := filepath.Abs("userlist.txt")
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthFile != want {
		t.Errorf("auth_file = %q, want %q resolved against the config's directory", c.AuthFile, want)
	}
	// Every key documented in the example must be a real key: a complete
	// round trip through ToTOML shows the example covers the whole Config.
	out, err := c.ToTOML()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("pgferry.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		key, _, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		if !strings.Contains(string(example), key+" = ") {
			t.Errorf("pgferry.toml does not document %q", key)
		}
	}
}

func TestTestdataConfigsLoad(t *testing.T) {
	c, _, err := LoadWithEnv(filepath.Join("testdata", "replicas.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	app := c.Databases["app"]
	if got := app.Password.Reveal(); got != "ferry-secret-pw" {
		t.Errorf("password from password_file = %q", got)
	}
	if app.ReadYourWrites != 0 {
		t.Errorf("explicit read_your_writes = 0 became %v", app.ReadYourWrites)
	}
	if app.MaxReplicaLag.Std() != 5*time.Second {
		t.Errorf("max_replica_lag = %v, want 5s", app.MaxReplicaLag)
	}
	wantReplicas := []Replica{{Host: "10.0.0.11", Port: 5432, Weight: 1}, {Host: "10.0.0.12", Port: 5433, Weight: 3}}
	if !reflect.DeepEqual(app.Replicas, wantReplicas) {
		t.Errorf("replicas = %+v, want %+v", app.Replicas, wantReplicas)
	}

	e, _, err := LoadWithEnv(filepath.Join("testdata", "entra.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db := e.Databases["app"]; db.EntraScope != defaultEntraScope || db.EntraCredential != "managed_identity" {
		t.Errorf("entra defaults not applied: %+v", db)
	}
}

func TestSecretsAreNeverPrinted(t *testing.T) {
	const pw = "hunter2-very-secret"
	s := Secret(pw)
	formatted := []string{
		fmt.Sprintf("%v %s %q %+v %#v %x %X %10s %-5v %d", s, s, s, s, s, s, s, s, s, s),
		fmt.Sprint(s), fmt.Sprintln(s), s.String(), s.GoString(),
	}
	b, _ := s.MarshalText()
	formatted = append(formatted, string(b))

	c := mustParse(t, minimalTOML+appDB+`password = "`+pw+`"`+"\n[users.bob]\npassword = \""+pw+"\"\n")
	db, _ := c.Database("app")
	formatted = append(formatted,
		fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(c),
		fmt.Sprintf("%+v", *c), fmt.Sprintf("%#v", *c), fmt.Sprintf("%+v", db), fmt.Sprintf("%v", c.Users),
		fmt.Errorf("dial %+v: %w", db, errors.New("boom")).Error(),
	)
	for _, out := range formatted {
		if strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) {
			t.Errorf("secret leaked in %q", out)
		}
	}
	if !strings.Contains(formatted[0], "[redacted]") {
		t.Errorf("%q does not say [redacted]", formatted[0])
	}
	if s.Reveal() != pw {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
}

func TestLookupDatabase(t *testing.T) {
	c := mustParse(t, minimalTOML+appDB+`readonly_alias = "app_ro"
[databases.fixed]
host = "h"
dbname = "real"
[databases."*"]
host = "fallback"
`)
	tests := []struct {
		name         string
		in           string
		wantHost     string
		wantDBName   string
		wantReadOnly bool
		wantOK       bool
	}{
		{name: "exact entry", in: "app", wantHost: "127.0.0.1", wantDBName: "app", wantOK: true},
		{name: "exact entry with its own dbname", in: "fixed", wantHost: "h", wantDBName: "real", wantOK: true},
		{name: "readonly alias resolves to the aliased database", in: "app_ro", wantHost: "127.0.0.1", wantDBName: "app", wantReadOnly: true, wantOK: true},
		{name: "unknown name falls back to the wildcard with its own name", in: "other", wantHost: "fallback", wantDBName: "other", wantOK: true},
		{name: "empty name matches nothing", in: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, ro, ok := c.LookupDatabase(tc.in)
			if ok != tc.wantOK || ro != tc.wantReadOnly || db.Host != tc.wantHost || db.DBName != tc.wantDBName {
				t.Errorf("LookupDatabase(%q) = {Host:%q DBName:%q}, %v, %v; want {Host:%q DBName:%q}, %v, %v",
					tc.in, db.Host, db.DBName, ro, ok, tc.wantHost, tc.wantDBName, tc.wantReadOnly, tc.wantOK)
			}
			db2, ok2 := c.Database(tc.in)
			if ok2 != ok || !reflect.DeepEqual(db2, db) {
				t.Errorf("Database(%q) disagrees with LookupDatabase", tc.in)
			}
		})
	}
	if c.Databases["*"].DBName != "" {
		t.Error("LookupDatabase modified the wildcard entry")
	}

	noWildcard := mustParse(t, minimalTOML+appDB)
	if _, _, ok := noWildcard.LookupDatabase("other"); ok {
		t.Error("LookupDatabase found a database without a wildcard entry")
	}
}

func TestRestartOnlyChanges(t *testing.T) {
	old := mustParse(t, minimalTOML+appDB)
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string
	}{
		{name: "no change", modify: func(*Config) {}},
		{name: "reloadable settings only", modify: func(c *Config) { c.DefaultPoolSize = 3; c.QueryTimeout = 1 }},
		{name: "listen port", modify: func(c *Config) { c.ListenPort = 1 }, want: []string{"listen_port"}},
		{name: "every listener", modify: func(c *Config) {
			c.ListenAddr, c.ListenPort, c.UnixSocketDir, c.SoReuseport = "*", 1, "/tmp", true
			c.MetricsListen, c.DebugListen = ":1", ":2"
		}, want: []string{"listen_addr", "listen_port", "unix_socket_dir", "so_reuseport", "metrics_listen", "debug_listen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := *old
			tc.modify(&n)
			if got := RestartOnlyChanges(old, &n); !slices.Equal(got, tc.want) {
				t.Errorf("RestartOnlyChanges = %q, want %q", got, tc.want)
			}
		})
	}
	if RestartOnlyChanges(nil, old) != nil {
		t.Error("RestartOnlyChanges(nil, c) != nil")
	}
}

func TestEntraClientLoginsLoadWithRequiredClientTLSAndRoles(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Only Entra clients: auth_type needs no auth_file.
	doc := `auth_type = "scram-sha-256"
client_tls_sslmode = "require"
client_tls_cert_file = "` + certFile + `"
client_tls_key_file = "` + certFile + `"
[client_entra]
tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
authority_host = "https://login.microsoftonline.us"
v1_issuer_host = "https://sts.usgovcloudapi.net"
clock_skew = "30s"
[client_entra.roles]
app_rw = ["app:22222222-0000-0000-0000-000000000002", "group:44444444-0000-0000-0000-000000000004"]
[databases.app]
host = "127.0.0.1"
client_auth = "entra"
[users.alice]
client_auth = "entra"
`
	c := mustParse(t, doc)
	if !c.EntraClients() || c.ClientEntra.ClockSkew.Std() != 30*time.Second || len(c.ClientEntra.Roles["app_rw"]) != 2 {
		t.Fatalf("client_entra not loaded: %+v", c.ClientEntra)
	}
}

func TestToTOMLLeavesADefaultRelayLoopToTheMachineThatReadsTheFile(t *testing.T) {
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(certFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		tls         bool
		on, set     bool
		wantWritten bool
	}{
		{"the default, not set", false, defaultRelayLoop, false, false},
		{"the default, set", false, defaultRelayLoop, true, true},
		{"not the default", false, !defaultRelayLoop, false, true},
		{"client TLS, the default, not set", true, defaultRelayLoop, false, false},
		{"client TLS, set on", true, true, true, true},
		{"client TLS, set off", true, false, true, true},
	}
	for _, tc := range cases {
		c := Default()
		c.AuthType = "trust"
		c.Databases["app"] = Database{Host: "127.0.0.1", Port: 5432}
		if tc.tls {
			c.ClientTLSSSLMode, c.ClientTLSCertFile, c.ClientTLSKeyFile = "prefer", certFile, certFile
		}
		c.RelayLoop, c.RelayLoopSet = tc.on, tc.set
		out, err := c.ToTOML()
		if err != nil {
			t.Fatal(err)
		}
		if written := strings.Contains(string(out), "\nrelay_loop = "); written != tc.wantWritten {
			t.Errorf("%s: relay_loop written = %v, want %v\n%s", tc.name, written, tc.wantWritten, out)
		}
		back, _, err := Parse(out, "toml", nil)
		if err != nil {
			t.Fatalf("%s: Parse(ToTOML()): %v\n%s", tc.name, err, out)
		}
		if back.RelayLoop != tc.on || back.RelayLoopSet != tc.wantWritten {
			t.Errorf("%s: relay_loop = %v (set %v) came back as %v (set %v)", tc.name, tc.on, tc.set, back.RelayLoop, back.RelayLoopSet)
		}
	}
}

func TestRelayLoopTakesItsDefaultWhateverTheClientsTLSAndIsAsWrittenOtherwise(t *testing.T) {
	// As on a machine where the loop is on by default (Linux, two CPUs),
	// whatever this one is.
	saved := defaultRelayLoop
	defaultRelayLoop = true
	t.Cleanup(func() { defaultRelayLoop = saved })
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "auth_type = \"trust\"\n[databases.app]\nhost = \"127.0.0.1\"\n"
	tls := "client_tls_sslmode = \"prefer\"\nclient_tls_cert_file = \"" + certFile + "\"\nclient_tls_key_file = \"" + certFile + "\"\n"
	tlsOnly := strings.Replace(tls, "prefer", "require", 1)
	cases := []struct {
		name, top string
		env       map[string]string
		want      bool
	}{
		{"no client TLS, relay_loop not set", "", nil, true},
		{"client TLS offered, relay_loop not set", tls, nil, true},
		{"client TLS offered, relay_loop = false", tls + "relay_loop = false\n", nil, false},
		{"client TLS required, relay_loop not set", tlsOnly, nil, true},
		{"client TLS required, relay_loop = false", tlsOnly + "relay_loop = false\n", nil, false},
		{"client TLS required, relay_loop = true", tlsOnly + "relay_loop = true\n", nil, true},
		{"client TLS required, PGFERRY_RELAY_LOOP=true", tlsOnly, map[string]string{"PGFERRY_RELAY_LOOP": "true"}, true},
		{"no client TLS, relay_loop = false", "relay_loop = false\n", nil, false},
	}
	for _, tc := range cases {
		c, _, err := Parse([]byte(tc.top+base), "toml", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if c.RelayLoop != tc.want {
			t.Errorf("%s: relay_loop = %v, want %v", tc.name, c.RelayLoop, tc.want)
		}
	}
	// A pgbouncer.ini: the same, relay_loop being a key pgferry adds.
	ini := "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nauth_type = trust\n" + strings.ReplaceAll(tlsOnly, "\"", "")
	for _, tc := range []struct {
		extra string
		want  bool
	}{{"", true}, {"relay_loop = 0\n", false}} {
		c, _, err := Parse([]byte(ini+tc.extra), "ini", nil)
		if err != nil {
			t.Fatalf("ini %q: %v", tc.extra, err)
		}
		if c.RelayLoop != tc.want {
			t.Errorf("pgbouncer.ini requiring client TLS, and %q: relay_loop = %v, want %v", tc.extra, c.RelayLoop, tc.want)
		}
	}
}
