package router_test

// End-to-end tests of auth_type = "hba" (auth_hba_file) and "cert": real
// clients from two loopback addresses, with and without TLS and client
// certificates, through pgferry to PostgreSQL.

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/router"
)

// hbaMatrix is the auth_hba_file of TestHBAMatrix. Every client user logs
// in to PostgreSQL as app (the database entry forces it).
const hbaMatrix = `# TestHBAMatrix
local     app   app                             trust
hostssl   all   certuser  127.0.0.1/32          cert
host      all   blocked   all                   reject
host      app   md5user   127.0.0.2 255.255.255.255 md5
hostnossl app   app       127.0.0.1/32          scram-sha-256
hostssl   app   app       127.0.0.1/32          password
host      app   trusted   127.0.0.0/8           trust
host      "pgbouncer" admin 127.0.0.1/32        scram-sha-256
`

// md5Secret is an auth_file MD5 secret: "md5" + md5(password + user).
func md5Secret(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// hbaConfig returns a configuration with auth_type = "hba" reading text as
// its auth_hba_file, client TLS offered (sslmode prefer) with ca as the
// client certificate authority, and the users of hbaMatrix. It returns the
// file's path too.
func hbaConfig(t *testing.T, text string, ca *pgtest.ClientCA) (*configs.Config, string) {
	t.Helper()
	cfg, _ := configWithOwnDatabase(t)
	path := filepath.Join(t.TempDir(), "hba.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AuthType, cfg.AuthHBAFile = "hba", path
	offerClientTLS(cfg, "prefer")
	cfg.ClientTLSCAFile = ca.CertFile
	db := cfg.Databases["app"]
	db.User = pgtest.AppUser
	cfg.Databases["app"] = db
	cfg.Users["md5user"] = configs.User{Password: configs.Secret(md5Secret("md5user", "md5-secret"))}
	return cfg, path
}

// dialFrom returns a dial function binding the client end to source (an
// address of the loopback network), so that pgferry sees that address.
func dialFrom(source string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 10 * time.Second}
	return d.DialContext
}

// unixSocketDir returns a short temporary directory for pgferry's unix
// socket (a socket path is limited to 107 bytes), removed when the test ends.
func unixSocketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hba")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// hbaClient describes how a test client connects.
type hbaClient struct {
	source   string // client address: 127.0.0.1 or 127.0.0.2, or a unix socket directory
	tls      bool
	certCN   string // present a client certificate with this common name; "" none
	user     string
	database string
	password string
}

// pgxConfig builds the pgx configuration of a client of f.
func (c hbaClient) pgxConfig(t *testing.T, f *ferrytest.Ferry, ca *pgtest.ClientCA) *pgx.ConnConfig {
	t.Helper()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password='%s' sslmode=disable", f.Addr.Port, c.database, c.user, c.password)
	if c.tls {
		dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=require", 1)
		if c.certCN != "" {
			certFile, keyFile, err := ca.IssueClient(c.certCN)
			if err != nil {
				t.Fatal(err)
			}
			dsn += " sslcert=" + certFile + " sslkey=" + keyFile
		}
	}
	if strings.HasPrefix(c.source, "/") {
		dsn = strings.Replace(dsn, "host=127.0.0.1", "host="+c.source, 1)
	}
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.source, "/") {
		cc.DialFunc = dialFrom(c.source)
	}
	return cc
}

// firstAuthAnswer sends c's startup packet over a raw connection (with TLS
// when c.tls, without a client certificate) and returns pgferry's first
// answer: the authentication request code of an 'R' message, or the
// fields of an ErrorResponse.
func firstAuthAnswer(t *testing.T, f *ferrytest.Ferry, c hbaClient) (code int, fields map[byte]string) {
	t.Helper()
	ctx := testContext(t)
	var raw net.Conn
	var err error
	if strings.HasPrefix(c.source, "/") {
		raw, err = net.Dial("unix", filepath.Join(c.source, fmt.Sprintf(".s.PGSQL.%d", f.Addr.Port)))
	} else {
		raw, err = dialFrom(c.source)(ctx, "tcp", f.Addr.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	conn := raw
	if c.tls {
		sendRaw(t, raw, startupPacket(sslRequestCode, nil))
		var b [1]byte
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := raw.Read(b[:]); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest answered %q, %v; want 'S'", b[0], err)
		}
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // the test checks pgferry's auth, not its certificate
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatal(err)
		}
		conn = tc
	}
	sendRaw(t, conn, startupMessage(t, c.user, c.database))
	frames, _, err := readFrames(conn, 10*time.Second, func(frame) bool { return true })
	if len(frames) == 0 {
		t.Fatalf("no answer to the startup packet: %v", err)
	}
	switch fr := frames[0]; fr.typ {
	case 'R':
		return int(binary.BigEndian.Uint32(fr.body)), nil
	case 'E':
		return -1, errorFields(fr.body)
	default:
		t.Fatalf("unexpected answer %s", describe(frames))
		return 0, nil
	}
}

func TestHBAMatrixDecidesByAddressDatabaseUserAndEncryption(t *testing.T) {
	t.Parallel()
	ca, err := pgtest.NewClientCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := hbaConfig(t, hbaMatrix, ca)
	sock := unixSocketDir(t)
	cfg.UnixSocketDir = sock
	f := ferrytest.Start(t, cfg)

	const (
		authOK       = 0
		authPassword = 3
		authMD5      = 5
		authSASL     = 10
	)
	tests := []struct {
		name     string
		client   hbaClient
		wantAuth int    // first request over a raw connection without a certificate; -1: an error
		wantCode string // "": pgx logs in and runs a query; else the SQLSTATE pgx gets
		wantMsg  string
	}{
		{"app over the unix socket is trusted (local line)",
			hbaClient{source: sock, user: "app", database: "app"}, authOK, "", ""},
		{"md5user over the unix socket has no line",
			hbaClient{source: sock, user: "md5user", database: "app", password: "md5-secret"}, -1, "28000",
			`no auth_hba_file entry for host "[local]", user "md5user", database "app", no encryption`},
		{"scram for app over plain TCP from 127.0.0.1",
			hbaClient{source: "127.0.0.1", user: "app", database: "app", password: ferrytest.Password}, authSASL, "", ""},
		{"cleartext password for app over TLS (hostssl line)",
			hbaClient{source: "127.0.0.1", tls: true, user: "app", database: "app", password: ferrytest.Password}, authPassword, "", ""},
		{"wrong password on the scram line",
			hbaClient{source: "127.0.0.1", user: "app", database: "app", password: "nope"}, authSASL, "28P01", "password authentication failed"},
		{"md5 for md5user from 127.0.0.2 through the netmask line",
			hbaClient{source: "127.0.0.2", user: "md5user", database: "app", password: "md5-secret"}, authMD5, "", ""},
		{"md5user from 127.0.0.1 has no line",
			hbaClient{source: "127.0.0.1", user: "md5user", database: "app", password: "md5-secret"}, -1, "28000",
			`no auth_hba_file entry for host "127.0.0.1", user "md5user", database "app", no encryption`},
		{"app from 127.0.0.2 has no line",
			hbaClient{source: "127.0.0.2", user: "app", database: "app", password: ferrytest.Password}, -1, "28000",
			`no auth_hba_file entry for host "127.0.0.2", user "app", database "app", no encryption`},
		{"app on another database has no line",
			hbaClient{source: "127.0.0.1", user: "app", database: "postgres", password: ferrytest.Password}, -1, "28000",
			`no auth_hba_file entry for host "127.0.0.1", user "app", database "postgres", no encryption`},
		{"reject line",
			hbaClient{source: "127.0.0.2", user: "blocked", database: "app", password: "x"}, -1, "28000",
			`auth_hba_file rejects connection for host "127.0.0.2", user "blocked", database "app", no encryption`},
		{"trust from any loopback address",
			hbaClient{source: "127.0.0.2", user: "trusted", database: "app"}, authOK, "", ""},
		{"cert user without TLS has no line (hostssl)",
			hbaClient{source: "127.0.0.1", user: "certuser", database: "app"}, -1, "28000",
			`no auth_hba_file entry for host "127.0.0.1", user "certuser", database "app", no encryption`},
		{"cert user over TLS with a matching certificate",
			hbaClient{source: "127.0.0.1", tls: true, certCN: "certuser", user: "certuser", database: "app"}, -1, "", ""},
		{"cert user over TLS with another user's certificate",
			hbaClient{source: "127.0.0.1", tls: true, certCN: "app", user: "certuser", database: "app"}, -1, "28000",
			`certificate authentication failed for user "certuser"`},
		{"cert user over TLS without a certificate",
			hbaClient{source: "127.0.0.1", tls: true, user: "certuser", database: "app"}, -1, "28000",
			"connection requires a valid client certificate"},
		{"admin console through its own line",
			hbaClient{source: "127.0.0.1", user: "admin", database: "pgbouncer", password: "admin-secret"}, authSASL, "", ""},
		{"admin console from 127.0.0.2 has no line",
			hbaClient{source: "127.0.0.2", user: "admin", database: "pgbouncer", password: "admin-secret"}, -1, "28000",
			`no auth_hba_file entry for host "127.0.0.2", user "admin", database "pgbouncer", no encryption`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			code, fields := firstAuthAnswer(t, f, tc.client)
			if code != tc.wantAuth {
				t.Fatalf("first answer: auth request %d (error %v), want %d", code, fields, tc.wantAuth)
			}
			conn, err := pgx.ConnectConfig(ctx, tc.client.pgxConfig(t, f, ca))
			if tc.wantCode != "" {
				pe := expectPgError(t, err, tc.wantCode)
				if pe.Severity != "FATAL" || !strings.Contains(pe.Message, tc.wantMsg) {
					t.Fatalf("got %s %q, want FATAL containing %q", pe.Severity, pe.Message, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("login refused: %v", err)
			}
			defer conn.Close(ctx)
			if tc.client.database == "pgbouncer" {
				if _, err := conn.Exec(ctx, "show version", pgx.QueryExecModeSimpleProtocol); err != nil {
					t.Fatal(err)
				}
				return
			}
			var user string
			if err := conn.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != pgtest.AppUser {
				t.Fatalf("query after login: %q, %v", user, err)
			}
		})
	}
	assertNoPanic(t, f)
}

func TestHBAFileIsReadAgainOnReloadAndABadOneKeepsTheOldRules(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ca, err := pgtest.NewClientCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, path := hbaConfig(t, "host all trusted 127.0.0.1/32 reject\n", ca)
	f := ferrytest.Start(t, cfg)
	trusted := hbaClient{source: "127.0.0.1", user: "trusted", database: "app"}
	if _, err := pgx.ConnectConfig(ctx, trusted.pgxConfig(t, f, ca)); err == nil {
		t.Fatal("the reject line let the client in")
	}

	if err := os.WriteFile(path, []byte("host all trusted 127.0.0.1/32 trust\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Server.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, trusted.pgxConfig(t, f, ca))
	if err != nil {
		t.Fatalf("after reloading a trust line: %v", err)
	}
	conn.Close(ctx)

	if err := os.WriteFile(path, []byte("host all trusted 127.0.0.1/32 reject\nhost all +admins all md5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = f.Server.Reload(cfg)
	if err == nil || !strings.Contains(err.Error(), "auth_hba_file: "+path+":2: ") {
		t.Fatalf("reload of a file with +group: got %v, want an error naming %s:2", err, path)
	}
	conn, err = pgx.ConnectConfig(ctx, trusted.pgxConfig(t, f, ca))
	if err != nil {
		t.Fatalf("a failed reload changed the rules in force: %v", err)
	}
	conn.Close(ctx)
}

func TestHBAFileThatPgferryCannotHonourStopsTheStart(t *testing.T) {
	t.Parallel()
	ca, err := pgtest.NewClientCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		text  string
		plain bool // no client TLS
		want  string
	}{
		{"peer method", "local all all trust\nlocal all all peer\n", false, `:2: authentication method "peer" is not supported by pgferry`},
		{"group membership", "host all +admins 10.0.0.0/8 md5\n", false, ":1: "},
		{"cert line without client TLS", "hostssl all all all cert\n", true, ":1: method cert needs client TLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, path := hbaConfig(t, tc.text, ca)
			if tc.plain {
				cfg.ClientTLSSSLMode, cfg.ClientTLSCAFile = "disable", ""
			}
			_, err := router.New(cfg, router.Options{})
			if err == nil || !strings.Contains(err.Error(), "auth_hba_file: "+path+tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, "auth_hba_file: "+path+tc.want)
			}
		})
	}
}

func TestCertAuthAdmitsOnlyTheUserNamedByTheClientCertificate(t *testing.T) {
	t.Parallel()
	ca, err := pgtest.NewClientCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := configWithOwnDatabase(t)
	cfg.AuthType = "cert"
	offerClientTLS(cfg, "verify-ca")
	cfg.ClientTLSCAFile = ca.CertFile
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name     string
		client   hbaClient
		wantCode string // "": logged in; "tls": the handshake fails
		wantMsg  string
	}{
		{"matching common name", hbaClient{source: "127.0.0.1", tls: true, certCN: "app", user: "app", database: "app"}, "", ""},
		{"another user's certificate", hbaClient{source: "127.0.0.1", tls: true, certCN: "admin", user: "app", database: "app"}, "28000", `certificate authentication failed for user "app"`},
		{"no certificate", hbaClient{source: "127.0.0.1", tls: true, user: "app", database: "app"}, "tls", ""},
		{"no TLS", hbaClient{source: "127.0.0.1", user: "app", database: "app"}, "28000", "SSL required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			conn, err := pgx.ConnectConfig(ctx, tc.client.pgxConfig(t, f, ca))
			switch tc.wantCode {
			case "":
				if err != nil {
					t.Fatalf("login refused: %v", err)
				}
				defer conn.Close(ctx)
				if err := conn.Ping(ctx); err != nil {
					t.Fatal(err)
				}
			case "tls":
				if err == nil {
					conn.Close(ctx)
					t.Fatal("a client without a certificate logged in")
				}
				if _, _, ok := pgCode(err); ok {
					t.Fatalf("got a PostgreSQL error %v, want the TLS handshake to fail", err)
				}
			default:
				pe := expectPgError(t, err, tc.wantCode)
				if !strings.Contains(pe.Message, tc.wantMsg) {
					t.Fatalf("got %q, want %q", pe.Message, tc.wantMsg)
				}
			}
		})
	}
}
