package configs

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// iniDB is a minimal valid [databases] section.
const iniDB = "[databases]\napp = host=127.0.0.1\n"

func TestINIAcceptsPgBouncerBooleans(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"1", true}, {"yes", true}, {"true", true}, {"on", true}, {"ON", true},
		{"0", false}, {"no", false}, {"false", false}, {"off", false}, {"Off", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			doc := "[pgbouncer]\nauth_type = trust\nso_reuseport = " + tc.in + "\n" + iniDB
			c, _, err := Parse([]byte(doc), "ini", nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.SoReuseport != tc.want {
				t.Errorf("so_reuseport = %s decoded as %v", tc.in, c.SoReuseport)
			}
		})
	}
}

func TestINIReadsSettings(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		check   func(*Config) bool
		warning string
	}{
		{
			name:  "auth_type defaults to PgBouncer's md5",
			doc:   "[pgbouncer]\nauth_file = testdata/userlist.txt\n" + iniDB,
			check: func(c *Config) bool { return c.AuthType == "md5" },
		},
		{
			name:  "auth_type hba with auth_hba_file",
			doc:   "[pgbouncer]\nauth_type = hba\nauth_hba_file = testdata/hba.conf\nauth_file = testdata/userlist.txt\n" + iniDB,
			check: func(c *Config) bool { return c.AuthType == "hba" && c.AuthHBAFile == "testdata/hba.conf" },
		},
		{
			name:    "auth_hba_file without auth_type hba warns that it is not used",
			doc:     "[pgbouncer]\nauth_type = trust\nauth_hba_file = testdata/hba.conf\n" + iniDB,
			check:   func(c *Config) bool { return c.AuthType == "trust" },
			warning: `auth_hba_file: not used because auth_type is "trust"`,
		},
		{
			name:  "auth_type is case-insensitive",
			doc:   "[pgbouncer]\nAUTH_TYPE = Trust\n" + iniDB,
			check: func(c *Config) bool { return c.AuthType == "trust" },
		},
		{
			name:  "listen_addr list containing * means all interfaces",
			doc:   "[pgbouncer]\nauth_type = trust\nlisten_addr = 127.0.0.1, *\n" + iniDB,
			check: func(c *Config) bool { return c.ListenAddr == "*" },
		},
		{
			name:    "empty listen_addr keeps the default with a warning",
			doc:     "[pgbouncer]\nauth_type = trust\nlisten_addr =\n" + iniDB,
			check:   func(c *Config) bool { return c.ListenAddr == "127.0.0.1" },
			warning: "pgbouncer.listen_addr is empty",
		},
		{
			name:  "unix_socket_dir is not assumed",
			doc:   "[pgbouncer]\nauth_type = trust\n" + iniDB,
			check: func(c *Config) bool { return c.UnixSocketDir == "" },
		},
		{
			name:    "unknown sections are ignored with a warning",
			doc:     "[pgbouncer]\nauth_type = trust\n[other]\n1 = host=x\n" + iniDB,
			check:   func(c *Config) bool { return len(c.Databases) == 1 },
			warning: "section [other] is not supported",
		},
		{
			name: "quoted names and connection string escapes",
			doc:  "[pgbouncer]\nauth_type = trust\n[databases]\n\"my db\" = host = h dbname='my '' db' password='a''b c'\n",
			check: func(c *Config) bool {
				db := c.Databases["my db"]
				return db.Host == "h" && db.DBName == "my ' db" && db.Password.Reveal() == "a'b c"
			},
		},
		{
			name: "a password with backslashes reads as PgBouncer reads it",
			doc:  "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h password=p\\w\\ dbname='d\\'\n",
			check: func(c *Config) bool {
				db := c.Databases["app"]
				return db.Password.Reveal() == `p\w\` && db.DBName == `d\`
			},
		},
		{
			// PgBouncer's cfparser.c takes a name in single quotes as it
			// stands, up to the next quote (1.25.2 lists 'my db' = ... as
			// "my db" in SHOW DATABASES, checked by hand).
			name: "a database or user name in single quotes",
			doc:  "[pgbouncer]\nauth_type = trust\n[databases]\n'my db' = host=h\n'a=b;c'=host=h2\n[users]\n'bob smith' = pool_mode=session\n",
			check: func(c *Config) bool {
				return c.Databases["my db"].Host == "h" && c.Databases["a=b;c"].Host == "h2" &&
					c.Users["bob smith"].PoolMode == "session" && len(c.Databases) == 2
			},
		},
		{
			// PgBouncer reads a setting with named values (cf_set_lookup)
			// case-insensitively: 1.25.2 runs with pool_mode = Session,
			// server_tls_sslmode = Disable, pool_mode=Transaction in a
			// database line (checked by hand).
			name: "named values in any case",
			doc: "[pgbouncer]\nauth_type = Trust\npool_mode = Session\nserver_tls_sslmode = Disable\nclient_tls_sslmode = DISABLE\n" +
				"[databases]\napp = host=h pool_mode=Transaction\n[users]\nbob = pool_mode=SESSION\n",
			check: func(c *Config) bool {
				return c.PoolMode == "session" && c.ServerTLSSSLMode == "disable" && c.ClientTLSSSLMode == "disable" &&
					c.Databases["app"].PoolMode == "transaction" && c.Users["bob"].PoolMode == "session"
			},
		},
		{
			name:    "a host list warns that pgferry fails over where PgBouncer balances",
			doc:     "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=db1,db2 port=5432\n",
			check:   func(c *Config) bool { return c.Databases["app"].Host == "db1,db2" },
			warning: "databases.app.host: pgferry takes a host list for failover",
		},
		{
			name:    "an unset pool_mode warns that PgBouncer's default is session",
			doc:     "[pgbouncer]\nauth_type = trust\n" + iniDB,
			check:   func(c *Config) bool { return c.PoolMode == "transaction" },
			warning: "pgbouncer.pool_mode is not set: pgferry pools by transaction, where PgBouncer's default is session",
		},
		{
			name:  "PgBouncer's reserve_pool_size alias in a database line",
			doc:   "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h reserve_pool_size=4\n",
			check: func(c *Config) bool { return c.Databases["app"].ReservePool == 4 },
		},
		{
			name:    "unsupported database key warns",
			doc:     "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h connect_query='select 1'\n",
			check:   func(c *Config) bool { return c.Databases["app"].Host == "h" },
			warning: "databases.app.connect_query is not supported by pgferry and is ignored",
		},
		{
			// PgBouncer 1.25.2's default, spelled as SHOW CONFIG shows it
			// (main.c: "<empty>" sends an empty query): pgferry sent it
			// to the server as SQL, a syntax error that failed every check.
			name:  "server_check_query <empty> is the empty query",
			doc:   "[pgbouncer]\nauth_type = trust\nserver_check_query = <empty>\n" + iniDB,
			check: func(c *Config) bool { return c.ServerCheckQuery == "" },
		},
		{
			// PgBouncer checks no server then (janitor.c launch_recheck).
			name:    "an empty server_check_query warns that pgferry still checks",
			doc:     "[pgbouncer]\nauth_type = trust\nserver_check_query =\n" + iniDB,
			check:   func(c *Config) bool { return c.ServerCheckQuery == "" },
			warning: "pgbouncer.server_check_query is empty: PgBouncer then checks no server before reuse",
		},
		{
			name:  "comments with ; and #",
			doc:   "; c1\n# c2\n[pgbouncer]\n  ; indented\nauth_type = trust\n" + iniDB,
			check: func(c *Config) bool { return c.AuthType == "trust" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, warnings, err := Parse([]byte(tc.doc), "ini", nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
			found := tc.warning == ""
			for _, w := range warnings {
				found = found || strings.Contains(w, tc.warning)
			}
			if !found {
				t.Errorf("warnings %q lack %q", warnings, tc.warning)
			}
		})
	}
}

func TestINIErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{name: "hba auth without a file", doc: "[pgbouncer]\nauth_type = hba\n" + iniDB, want: `auth_hba_file: required when auth_type is "hba"`},
		{name: "ident map file", doc: "[pgbouncer]\nauth_type = hba\nauth_hba_file = /x\nauth_ident_file = /y\n" + iniDB, want: "pgbouncer.auth_ident_file: user name maps are not supported"},
		{name: "pam auth", doc: "[pgbouncer]\nauth_type = pam\n" + iniDB, want: "pgbouncer.auth_type"},
		{name: "any auth", doc: "[pgbouncer]\nauth_type = any\n" + iniDB, want: "pgbouncer.auth_type"},
		{name: "cert auth without verified client tls", doc: "[pgbouncer]\nauth_type = cert\n" + iniDB, want: `client_tls_sslmode: auth_type = "cert" needs "verify-ca" or "verify-full"`},
		{name: "bad integer", doc: "[pgbouncer]\nauth_type = trust\nlisten_port = x\n" + iniDB, want: `pgbouncer.listen_port: invalid integer "x"`},
		{name: "bad boolean", doc: "[pgbouncer]\nauth_type = trust\nso_reuseport = perhaps\n" + iniDB, want: "pgbouncer.so_reuseport: invalid boolean"},
		{name: "bad duration", doc: "[pgbouncer]\nauth_type = trust\nserver_lifetime = long\n" + iniDB, want: "pgbouncer.server_lifetime: invalid duration"},
		{name: "several listen addresses", doc: "[pgbouncer]\nauth_type = trust\nlisten_addr = 10.0.0.1,10.0.0.2\n" + iniDB, want: "pgbouncer.listen_addr: pgferry listens on a single address"},
		{name: "bad database port", doc: "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h port=x\n", want: "databases.app.port: invalid integer"},
		{name: "unterminated quote", doc: "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h password='abc\n", want: `databases.app: malformed connection string: unterminated quoted value for key "password"`},
		{name: "bad user limit", doc: "[pgbouncer]\nauth_type = trust\n[users]\nbob = max_user_connections=many\n" + iniDB, want: "users.bob.max_user_connections: invalid integer"},
		{name: "key outside a section", doc: "auth_type = trust\n" + iniDB, want: `line 1: key "auth_type" outside of a section`},
		{name: "line without equals", doc: "[pgbouncer]\nauth_type\n" + iniDB, want: `line 2: expected "key = value"`},
		{name: "unterminated quoted name", doc: "[databases]\n'app = host=h\n", want: `line 2: expected "key = value"`},
		{name: "empty quoted name", doc: "[databases]\n'' = host=h\n", want: `line 2: expected "key = value"`},
		{name: "include of a missing file", doc: "%include /nonexistent/pgferry-extra.ini\n" + iniDB, want: "line 1: %include /nonexistent/pgferry-extra.ini: stat /nonexistent/pgferry-extra.ini: no such file"},
		{name: "include of a device", doc: "[pgbouncer]\n%include /dev/zero\n" + iniDB, want: "line 2: %include /dev/zero: not a regular file"},
		{name: "include without a file", doc: "%include \n" + iniDB, want: `line 1: expected "key = value"`},
		{name: "statement pooling", doc: "[pgbouncer]\nauth_type = trust\npool_mode = statement\n" + iniDB, want: "pool_mode: must be one of"},
		{name: "unix socket host", doc: "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=/var/run/postgresql port=5433\n", want: `databases.app.host: "/var/run/postgresql" is a unix socket directory`},
		{name: "database named pgbouncer", doc: "[pgbouncer]\nauth_type = trust\n[databases]\npgbouncer = host=h\n" + "app = host=h\n", want: `databases.pgbouncer: the name is the admin console's`},
		{name: "database without host", doc: "[pgbouncer]\nauth_type = trust\n[databases]\napp = dbname=x\n", want: "databases.app.host: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.doc), "ini", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestINIErrorsDoNotEchoPasswords(t *testing.T) {
	const pw = "topsecret-ini-pw"
	docs := []string{
		"[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h password='" + pw + "\n",
		"[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h password=" + pw + " port=bad\n",
		"[pgbouncer]\nauth_type = trust\n[databases]\n" + pw + "\n",
	}
	for _, doc := range docs {
		_, _, err := Parse([]byte(doc), "ini", nil)
		if err == nil {
			t.Fatalf("Parse(%q) succeeded", doc)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error echoes the password: %v", err)
		}
	}
}

func TestParseConnString(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    [][2]string
		wantErr bool
	}{
		{name: "empty", in: "", want: nil},
		{name: "simple pairs", in: "host=h port=1", want: [][2]string{{"host", "h"}, {"port", "1"}}},
		{name: "spaces around equals", in: "host = h  port= 1", want: [][2]string{{"host", "h"}, {"port", "1"}}},
		{name: "quoted value with blanks", in: "password='a b'", want: [][2]string{{"password", "a b"}}},
		{name: "doubled quote", in: "password='it''s'", want: [][2]string{{"password", "it's"}}},
		// PgBouncer's loader.c knows no backslash escapes: a backslash is an
		// ordinary character, quoted or not (PgBouncer 1.25.2 shows
		// dbname=a\b and dbname='it''s\x' as a\b and it's\x in SHOW DATABASES).
		{name: "a backslash is kept, unquoted", in: `password=a\b user=x\`, want: [][2]string{{"password", `a\b`}, {"user", `x\`}}},
		{name: "a backslash is kept, quoted", in: `password='it''s\x' dbname='c:\\d\'`, want: [][2]string{{"password", `it's\x`}, {"dbname", `c:\\d\`}}},
		{name: "empty quoted value", in: "password=''", want: [][2]string{{"password", ""}}},
		{name: "missing equals", in: "host", wantErr: true},
		{name: "missing key", in: "=h", wantErr: true},
		{name: "unterminated quote", in: "password='abc", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConnString(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseConnString(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseConnString(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestFormatDetection(t *testing.T) {
	tests := []struct {
		name, path, data, want string
	}{
		{name: "ini extension", path: "x.ini", data: "listen_port = 1", want: "ini"},
		{name: "toml extension wins over content", path: "x.toml", data: "[pgbouncer]", want: "toml"},
		{name: "pgbouncer section", path: "x.conf", data: "; comment\n\n[pgbouncer]\nlisten_port = 1\n", want: "ini"},
		{name: "ini databases section", path: "x.conf", data: "# c\n[databases]\napp = host=h port=1\n", want: "ini"},
		{name: "toml databases section", path: "x.conf", data: "[databases]\napp = { host = \"h\" }\n", want: "toml"},
		{name: "toml dotted table", path: "", data: "[databases.app]\nhost = \"h\"\n", want: "toml"},
		{name: "toml key first", path: "", data: "listen_port = 1\n[pgbouncer]\n", want: "toml"},
		{name: "empty", path: "", data: "", want: "toml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := detectFormat(tc.path, []byte(tc.data)); got != tc.want {
				t.Errorf("detectFormat(%q, %q) = %s, want %s", tc.path, tc.data, got, tc.want)
			}
		})
	}
}

func TestLoadDetectsINIByContentAndResolvesPathsAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"a" "b"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pgbouncer.conf")
	doc := "[pgbouncer]\nauth_file = users.txt\n" + iniDB
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "users.txt"); c.AuthFile != want {
		t.Errorf("auth_file = %q, want %q", c.AuthFile, want)
	}
}

func TestParseRejectsUnknownFormat(t *testing.T) {
	if _, _, err := Parse([]byte(""), "yaml", nil); err == nil || !strings.Contains(err.Error(), `unknown config format "yaml"`) {
		t.Fatalf("error = %v", err)
	}
}

func TestLoadReportsMissingFile(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error = %v, want a not-exist error", err)
	}
}

func TestPlainAuthWarns(t *testing.T) {
	_, warnings, err := Parse([]byte("[pgbouncer]\nauth_type = plain\nauth_file = testdata/userlist.txt\n"+iniDB), "ini", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, "auth_type:") }) {
		t.Errorf("warnings %q lack an auth_type warning", warnings)
	}
}

func TestINIAuthHBAFileIsResolvedAgainstTheConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hba.conf"), []byte("host all all 127.0.0.1/32 trust\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pgbouncer.ini")
	doc := "[pgbouncer]\nauth_type = hba\nauth_hba_file = hba.conf\n" + iniDB
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := LoadWithEnv(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "hba.conf"); c.AuthHBAFile != want {
		t.Fatalf("auth_hba_file = %q, want %q", c.AuthHBAFile, want)
	}
}

func TestCertAuthLoadsWithVerifiedClientTLS(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"verify-ca", "verify-full"} {
		doc := "[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = " + mode +
			"\nclient_tls_cert_file = cert.pem\nclient_tls_key_file = key.pem\nclient_tls_ca_file = ca.pem\n" + iniDB
		path := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := LoadWithEnv(path, nil)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if c.AuthType != "cert" {
			t.Fatalf("%s: auth_type = %q", mode, c.AuthType)
		}
	}
}

func TestPgBouncerPeeringReadsPeerIDAndThePeersSection(t *testing.T) {
	doc := "[pgbouncer]\nauth_type = trust\npeer_id = 2\n[peers]\n1 = host=10.0.0.1 port=6433\n3 = host=pgferry-3.example\n" + iniDB
	c, warnings, err := Parse([]byte(doc), "ini", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		if strings.Contains(w, "peer") {
			t.Errorf("peering reported as unsupported: %s", w)
		}
	}
	if c.PeerID != 2 || c.Peers["1"] != (Peer{Host: "10.0.0.1", Port: 6433}) || c.Peers["3"].Host != "pgferry-3.example" {
		t.Fatalf("peer_id %d, peers %+v", c.PeerID, c.Peers)
	}
}

func TestPeeringConfigIsValidatedAtLoad(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"[pgbouncer]\nauth_type = trust\npeer_id = 16384\n", "peer_id"},
		{"[pgbouncer]\nauth_type = trust\n[peers]\n1 = host=a\n", "peer_id: must be set"},
		{"[pgbouncer]\nauth_type = trust\npeer_id = 1\n[peers]\nx = host=a\n", "a peer is named by its peer_id"},
		{"[pgbouncer]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = port=5\n", "peers.2.host: must be set"},
	}
	for _, tc := range tests {
		_, _, err := Parse([]byte(tc.doc+iniDB), "ini", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.doc, err, tc.want)
		}
	}
}

// writeFiles writes name -> content under dir, making directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestINIIncludeReadsTheFileInPlace: PgBouncer's %include (cfparser.c)
// reads the file where the line stands; its lines go on in the section in
// force, and the section it ends in stays in force after it (PgBouncer
// 1.25.2, checked by hand: a line after an %include whose file ends in
// [users] is a user). Relative paths, nested ones included, are taken from
// the main file's directory, as PgBouncer takes them all from one place.
func TestINIIncludeReadsTheFileInPlace(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"pgbouncer.ini": "[pgbouncer]\nauth_type = trust\n%include conf.d/limits.ini\nlisten_port = 7001\n" +
			"[databases]\n%include conf.d/dbs.ini\ncarol = pool_mode=transaction\n",
		"conf.d/limits.ini":   "max_client_conn = 77\n",
		"conf.d/dbs.ini":      "app = host=h1\n\t%include conf.d/more-dbs.ini\n[users]\nbob = pool_mode=session\n",
		"conf.d/more-dbs.ini": "; nested\nreports = host=h2 dbname=r\n",
	})
	c, _, err := Load(filepath.Join(dir, "pgbouncer.ini"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxClientConn != 77 || c.ListenPort != 7001 {
		t.Errorf("max_client_conn = %d, listen_port = %d; want 77 from the included file and 7001 after it", c.MaxClientConn, c.ListenPort)
	}
	if c.Databases["app"].Host != "h1" || c.Databases["reports"].DBName != "r" {
		t.Errorf("databases %v lack app and reports from the included files", slices.Sorted(maps.Keys(c.Databases)))
	}
	if c.Users["bob"].PoolMode != "session" || c.Users["carol"].PoolMode != "transaction" {
		t.Errorf("users %+v: want bob from the included file and carol, after it, in its [users]", c.Users)
	}
	if _, ok := c.Databases["carol"]; ok {
		t.Error("carol, after an included file that ends in [users], was read as a database")
	}
	want := []string{filepath.Join(dir, "conf.d/limits.ini"), filepath.Join(dir, "conf.d/dbs.ini"), filepath.Join(dir, "conf.d/more-dbs.ini")}
	if !slices.Equal(c.Included, want) {
		t.Errorf("Included = %q, want %q", c.Included, want)
	}
}

func TestINIIncludeErrorsNameTheFileAndLine(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bad.ini":     "[pgbouncer]\nauth_type = trust\n%include sub/bad.ini\n" + iniDB,
		"sub/bad.ini": "; ok\nlisten_port\n",
		"loop.ini":    "[pgbouncer]\nauth_type = trust\n%include loop.ini\n" + iniDB,
	})
	tests := []struct{ file, want string }{
		{"bad.ini", `sub/bad.ini line 2: expected "key = value"`},
		{"loop.ini", "loop.ini line 3: %include loop.ini: nested more than 10 deep"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, _, err := Load(filepath.Join(dir, tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// PgBouncer reads a [pgbouncer] integer with strtol base 0 and a time with
// strtod (libusual cfparser.c cf_set_int, cf_set_time_usec at the 1.25.2
// tag); a database line's numbers with atoi (loader.c).
func TestINIReadsNumbersAsPgBouncerDoes(t *testing.T) {
	tests := []struct {
		name  string
		line  string
		check func(*Config) bool
	}{
		{"hexadecimal integer", "default_pool_size = 0x10", func(c *Config) bool { return c.DefaultPoolSize == 16 }},
		{"upper-case hexadecimal", "max_db_connections = 0X1f", func(c *Config) bool { return c.MaxDBConnections == 31 }},
		{"octal integer", "max_client_conn = 010", func(c *Config) bool { return c.MaxClientConn == 8 }},
		{"signed integer", "listen_port = +6433", func(c *Config) bool { return c.ListenPort == 6433 }},
		{"integer boolean above 1 is true", "so_reuseport = 2", func(c *Config) bool { return c.SoReuseport }},
		{"hexadecimal boolean", "server_reset_query_always = 0x1", func(c *Config) bool { return c.ServerResetQueryAlways }},
		{"fractional seconds", "query_timeout = 1.5", func(c *Config) bool { return c.QueryTimeout.Std() == 1500*time.Millisecond }},
		{"seconds without a leading digit", "query_timeout = .5", func(c *Config) bool { return c.QueryTimeout.Std() == 500*time.Millisecond }},
		{"seconds with an exponent", "server_lifetime = 1e2", func(c *Config) bool { return c.ServerLifetime.Std() == 100*time.Second }},
		{"hexadecimal seconds", "server_idle_timeout = 0x10", func(c *Config) bool { return c.ServerIdleTimeout.Std() == 16*time.Second }},
		{"hexadecimal fractional seconds", "client_idle_timeout = 0x1.8", func(c *Config) bool { return c.ClientIdleTimeout.Std() == 1500*time.Millisecond }},
		{"seconds truncated to microseconds", "query_wait_timeout = 0.0000019", func(c *Config) bool { return c.QueryWaitTimeout.Std() == time.Microsecond }},
		{"octal-looking seconds are decimal", "server_connect_timeout = 010", func(c *Config) bool { return c.ServerConnectTimeout.Std() == 10*time.Second }},
		{"a Go duration still reads", "server_login_retry = 2m", func(c *Config) bool { return c.ServerLoginRetry.Std() == 2*time.Minute }},
		{"a database line's numbers are decimal", "auth_type = trust\n[databases]\nother = host=h pool_size=010 port=05432", func(c *Config) bool {
			return c.Databases["other"].PoolSize == 10 && c.Databases["other"].Port == 5432
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := "[pgbouncer]\nauth_type = trust\n" + tc.line + "\n" + iniDB
			c, _, err := Parse([]byte(doc), "ini", nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("%q read as %+v", tc.line, c)
			}
		})
	}
}

// Values PgBouncer refuses (a partial strtol or strtod parse, Go's own
// number syntax) are refused, naming the key.
func TestINIRefusesNumbersPgBouncerRefuses(t *testing.T) {
	tests := []struct{ line, want string }{
		{"default_pool_size = 08", `pgbouncer.default_pool_size: invalid integer "08"`},
		{"default_pool_size = 0x", `pgbouncer.default_pool_size: invalid integer "0x"`},
		{"default_pool_size = 1_000", `pgbouncer.default_pool_size: invalid integer "1_000"`},
		{"default_pool_size = 0b11", `pgbouncer.default_pool_size: invalid integer "0b11"`},
		{"default_pool_size = 0o17", `pgbouncer.default_pool_size: invalid integer "0o17"`},
		{"default_pool_size = 1.5", `pgbouncer.default_pool_size: invalid integer "1.5"`},
		{"default_pool_size = --1", `pgbouncer.default_pool_size: invalid integer "--1"`},
		{"default_pool_size = 0x-1", `pgbouncer.default_pool_size: invalid integer "0x-1"`},
		{"max_client_conn = 99999999999999999999", `pgbouncer.max_client_conn: integer "99999999999999999999" out of range`},
		{"query_timeout = 1_0", `pgbouncer.query_timeout: invalid duration "1_0"`},
		{"query_timeout = inf", `pgbouncer.query_timeout: invalid duration "inf": not a finite number`},
		{"query_timeout = 1e400", `pgbouncer.query_timeout: invalid duration "1e400": out of range`},
		{"so_reuseport = 08", `pgbouncer.so_reuseport: invalid boolean "08"`},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			doc := "[pgbouncer]\nauth_type = trust\n" + tc.line + "\n" + iniDB
			_, _, err := Parse([]byte(doc), "ini", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestADatabaseLinesExplicitPoolNumbersAreKeptAsPgBouncerKeepsThem: PgBouncer
// 1.25.2 starts a database line's pool_size, min_pool_size and
// reserve_pool_size at -1 and takes the global value only while they are
// negative (loader.c parse_database, server.c pool_pool_size ..), so an
// explicit 0 is kept: SHOW DATABASES of PgBouncer 1.25.2, run on
//
//	a = host=127.0.0.1 min_pool_size=0 reserve_pool_size=0 pool_size=0 max_db_connections=0
//	b = host=127.0.0.1 min_pool_size=-1 reserve_pool_size=-1 pool_size=-1 max_db_connections=-1
//
// with default_pool_size 9, min_pool_size 2, reserve_pool_size 3 and
// max_db_connections 50, answers 0|0|0|50 for a and 9|2|3|50 for b. pgferry
// read every 0 as "not set" and took the global value (setDefault), so a
// database with min_pool_size=0 kept two servers open and one with
// reserve_pool_size=0 used three reserve connections. pgferry's TOML keeps
// an explicit min_pool_size and reserve_pool too; pool_size = 0 takes the
// global there, as its example file has long said.
func TestADatabaseLinesExplicitPoolNumbersAreKeptAsPgBouncerKeepsThem(t *testing.T) {
	const globalsINI = "[pgbouncer]\nauth_type = trust\ndefault_pool_size = 9\nmin_pool_size = 2\nreserve_pool_size = 3\nmax_db_connections = 50\n[databases]\n"
	const globalsTOML = "auth_type = \"trust\"\ndefault_pool_size = 9\nmin_pool_size = 2\nreserve_pool_size = 3\nmax_db_connections = 50\n"
	type nums struct{ pool, min, reserve, maxDB int }
	tests := []struct {
		name, format, doc string
		want              nums
	}{
		{"ini: explicit zeros", "ini", globalsINI + "app = host=h min_pool_size=0 reserve_pool_size=0 max_db_connections=0\n", nums{9, 0, 0, 50}},
		{"ini: the old name reserve_pool", "ini", globalsINI + "app = host=h reserve_pool=0\n", nums{9, 2, 0, 50}},
		{"ini: minus one is not set", "ini", globalsINI + "app = host=h pool_size=-1 min_pool_size=-1 reserve_pool_size=-1 max_db_connections=-1\n", nums{9, 2, 3, 50}},
		{"ini: left out", "ini", globalsINI + "app = host=h\n", nums{9, 2, 3, 50}},
		{"ini: explicit values", "ini", globalsINI + "app = host=h pool_size=4 min_pool_size=1 reserve_pool_size=1 max_db_connections=7\n", nums{4, 1, 1, 7}},
		{"ini: a later line replaces the entry whole", "ini", globalsINI + "app = host=h min_pool_size=0\napp = host=h\n", nums{9, 2, 3, 50}},
		{"ini: the wildcard entry", "ini", globalsINI + "* = host=h min_pool_size=0 reserve_pool_size=0\n", nums{9, 0, 0, 50}},
		{"toml: explicit zeros", "toml", globalsTOML + "[databases.app]\nhost = \"h\"\npool_size = 0\nmin_pool_size = 0\nreserve_pool = 0\nmax_db_connections = 0\n", nums{9, 0, 0, 50}},
		{"toml: left out", "toml", globalsTOML + "[databases.app]\nhost = \"h\"\n", nums{9, 2, 3, 50}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := Parse([]byte(tc.doc), tc.format, nil)
			if err != nil {
				t.Fatal(err)
			}
			name := "app"
			if strings.Contains(tc.name, "wildcard") {
				name = "*"
			}
			db := c.Databases[name]
			if got := (nums{db.PoolSize, db.MinPoolSize, db.ReservePool, db.MaxDBConnections}); got != tc.want {
				t.Errorf("pool_size, min_pool_size, reserve_pool, max_db_connections = %v, PgBouncer 1.25.2 runs with %v", got, tc.want)
			}
			// pgferry -convert keeps what the file said.
			out, err := c.ToTOML()
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := Parse(out, "toml", nil)
			if err != nil {
				t.Fatalf("Parse(ToTOML()): %v", err)
			}
			if bdb := back.Databases[name]; !reflect.DeepEqual(bdb, db) {
				t.Errorf("converted to TOML and read back: %+v, want %+v", bdb, db)
			}
		})
	}
}

// TestADatabaseLinesPoolSizeZeroIsRefusedNotReadAsTheDefault: pool_size=0
// on a PgBouncer database line lifts the limit per pool (objects.c
// launch_new_connection checks the pool only when pool_pool_size > 0),
// which pgferry does not offer; it took default_pool_size instead, without
// a word.
func TestADatabaseLinesPoolSizeZeroIsRefusedNotReadAsTheDefault(t *testing.T) {
	doc := "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h pool_size=0\n"
	_, _, err := Parse([]byte(doc), "ini", nil)
	if err == nil || !strings.Contains(err.Error(), "databases.app.pool_size: 0 (PgBouncer: no limit per pool") {
		t.Fatalf("error = %v, want databases.app.pool_size refused", err)
	}
}

// TestAUsersPoolSizesAreReadAsPgBouncerReadsThem: a [users] line's
// pool_size and reserve_pool_size size every pool of that user, before the
// database's (PgBouncer 1.25.2 server.c pool_pool_size and
// pool_res_pool_size; SHOW USERS of PgBouncer 1.25.2 shows "0" for an
// explicit reserve_pool_size=0). pgferry ignored both keys with a warning.
// A negative value is not set, as there; pool_size 0 (no limit per pool
// there) is refused.
func TestAUsersPoolSizesAreReadAsPgBouncerReadsThem(t *testing.T) {
	ptr := func(n int) *int { return &n }
	tests := []struct {
		name, format, doc string
		size, reserve     *int
		err               string
	}{
		{name: "ini: both set", format: "ini", doc: "[users]\nbob = pool_size=3 reserve_pool_size=0\n", size: ptr(3), reserve: ptr(0)},
		{name: "ini: left out", format: "ini", doc: "[users]\nbob = pool_mode=session\n"},
		{name: "ini: minus one is not set", format: "ini", doc: "[users]\nbob = pool_size=-1 reserve_pool_size=-1\n"},
		{name: "ini: pool_size 0 is refused", format: "ini", doc: "[users]\nbob = pool_size=0\n", err: "users.bob.pool_size: 0 (PgBouncer: no limit per pool"},
		{name: "toml: both set", format: "toml", doc: "[users.bob]\npool_size = 3\nreserve_pool_size = 0\n", size: ptr(3), reserve: ptr(0)},
		{name: "toml: left out", format: "toml", doc: "[users.bob]\npool_mode = \"session\"\n"},
		{name: "toml: a negative reserve is refused", format: "toml", doc: "[users.bob]\nreserve_pool_size = -1\n", err: "users.bob.reserve_pool_size: must be at least 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := "[pgbouncer]\nauth_type = trust\n" + iniDB + tc.doc
			if tc.format == "toml" {
				doc = "auth_type = \"trust\"\n[databases.app]\nhost = \"h\"\n" + tc.doc
			}
			c, _, err := Parse([]byte(doc), tc.format, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := c.Users["bob"]
			if !reflect.DeepEqual(u.PoolSize, tc.size) || !reflect.DeepEqual(u.ReservePoolSize, tc.reserve) {
				t.Errorf("pool_size %v, reserve_pool_size %v; want %v, %v", show(u.PoolSize), show(u.ReservePoolSize), show(tc.size), show(tc.reserve))
			}
			out, err := c.ToTOML()
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := Parse(out, "toml", nil)
			if err != nil {
				t.Fatalf("Parse(ToTOML()): %v", err)
			}
			if !reflect.DeepEqual(back.Users["bob"], u) {
				t.Errorf("converted to TOML and read back: %+v, want %+v", back.Users["bob"], u)
			}
		})
	}
}

// show prints an optional number.
func show(n *int) string {
	if n == nil {
		return "not set"
	}
	return strconv.Itoa(*n)
}
