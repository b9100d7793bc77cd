package router_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// serverCert does an SSLRequest and a TLS handshake with pgferry and
// returns the certificate it presented.
func serverCert(t *testing.T, f *ferrytest.Ferry) []byte {
	t.Helper()
	c := dialFerry(t, f)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sendRaw(t, c, startupPacket(sslRequestCode, nil))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v", b[0], err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc.ConnectionState().PeerCertificates[0].Raw
}

// writeLocalhostCert writes a fresh self-signed server certificate and key
// for localhost and returns their paths.
func writeLocalhostCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	return writeSelfSigned(t, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

func TestReloadSwapsTheClientTLSCertificateForNewConnections(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "prefer")
	f := ferrytest.Start(t, cfg)
	before := serverCert(t, f)

	next := *cfg
	next.ClientTLSCertFile, next.ClientTLSKeyFile = writeLocalhostCert(t)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	after := serverCert(t, f)
	if bytes.Equal(before, after) {
		t.Fatal("new TLS connections still get the old certificate after reload")
	}
	// A reload with a missing key file is rejected and the current
	// certificate stays in force.
	broken := next
	broken.ClientTLSKeyFile = filepath.Join(t.TempDir(), "missing.pem")
	if err := f.Server.Reload(&broken); err == nil {
		t.Fatal("a reload with a missing key file was accepted")
	}
	if got := serverCert(t, f); !bytes.Equal(got, after) {
		t.Fatal("a rejected reload changed the certificate")
	}
}

// A login binds SCRAM-SHA-256-PLUS to the certificate its own handshake
// presented: a reload that replaces the certificate between the
// handshake and the SCRAM exchange does not fail the login.
func TestALoginDuringACertificateReloadBindsSCRAMToTheCertificateItsHandshakeSaw(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "prefer")
	f := ferrytest.Start(t, cfg)
	next := *cfg
	next.ClientTLSCertFile, next.ClientTLSKeyFile = writeLocalhostCert(t)
	// The first handshake done (the only one until the login ends)
	// reloads the configuration with the new certificate.
	var reloads atomic.Int32
	reloaded := make(chan error, 1)
	defer router.SetFaultFor(f.Server, func(_, where string) {
		if where == "tls" && reloads.Add(1) == 1 {
			reloaded <- f.Server.Reload(&next)
		}
	})()
	conn := ferrytest.Connect(t, ctx, f.AppDSN()+" sslmode=require channel_binding=require")
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("pgx's connection is a %T, not TLS", conn.PgConn().Conn())
	}
	if bytes.Equal(tc.ConnectionState().PeerCertificates[0].Raw, serverCert(t, f)) {
		t.Fatal("the reload during the login did not replace the certificate")
	}
}

// replaceFile gives path the contents of from, as a certificate manager
// does: a new file renamed over the old one, under the same name.
func replaceFile(t *testing.T, path, from string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// copyToTemp copies from into a file of a test's own and returns its path.
func copyToTemp(t *testing.T, from string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), filepath.Base(from))
	replaceFile(t, path, from)
	return path
}

// A reload re-reads the files of pgferry's TLS towards servers, as
// PgBouncer's does (sbuf_tls_setup, which recycles every server connection):
// a certificate manager that rotates the CA or pgferry's client
// certificate in place, under the same names, has new server logins use
// the new files once pgferry reloads.
func TestAReloadRereadsTheServerTLSFilesReplacedUnderTheSameNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup points cfg at files of the test's own holding what the
		// server refuses, and returns a func that replaces them with
		// what it accepts, and the file a half-done write would break.
		setup func(t *testing.T, cfg *configs.Config) (replace func(), file string)
		// query, run through pgferry after the reload, shows the new
		// files in use; want is its result.
		query, want string
		// brokenKey is the key a reload names when file is broken.
		brokenKey string
	}{
		{
			name: "server_tls_ca_file",
			setup: func(t *testing.T, cfg *configs.Config) (func(), string) {
				ca := copyToTemp(t, writeOtherCA(t))
				cfg.ServerTLSCAFile = ca
				db := cfg.Databases["app"]
				db.Host, db.SSLMode, db.SSLRootCert = "localhost", "verify-full", ca
				cfg.Databases["app"] = db
				return func() { replaceFile(t, ca, cluster.CAFile) }, ca
			},
			query:     "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()",
			want:      "true",
			brokenKey: "databases.app.sslrootcert",
		},
		{
			// A certificate its ssl_ca_file did not sign is not even
			// sent: PostgreSQL names the CAs it accepts.
			name: "server_tls_cert_file and server_tls_key_file",
			setup: func(t *testing.T, cfg *configs.Config) (func(), string) {
				selfCert, selfKey := writeLocalhostCert(t)
				cert, key := copyToTemp(t, selfCert), copyToTemp(t, selfKey)
				cfg.ServerTLSCertFile, cfg.ServerTLSKeyFile = cert, key
				db := cfg.Databases["app"]
				db.SSLMode = "require"
				cfg.Databases["app"] = db
				return func() {
					replaceFile(t, cert, cluster.CertFile)
					replaceFile(t, key, cluster.KeyFile)
				}, key
			},
			query:     "select coalesce(client_dn, '') from pg_stat_ssl where pid = pg_backend_pid()",
			want:      "/O=pgferry tests/CN=localhost",
			brokenKey: "server_tls_key_file",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t) // (the subtest's own: it may wait long for its turn)
			cfg := ferrytest.Config(t, cluster)
			setPoolSize(cfg, "app", 1)
			replace, file := tc.setup(t, cfg)
			f := ferrytest.Start(t, cfg)
			if got, err := queryThrough(ctx, f, tc.query); err == nil && got == tc.want {
				t.Fatalf("before the files were replaced, %s = %q already", tc.query, got)
			}
			replace()
			next := *cfg
			if err := f.Server.Reload(&next); err != nil {
				t.Fatal(err)
			}
			got, err := queryThrough(ctx, f, tc.query)
			if err != nil {
				t.Fatalf("after the files were replaced and pgferry reloaded: %v", err)
			}
			if got != tc.want {
				t.Fatalf("after the files were replaced and pgferry reloaded, %s = %q, want %q", tc.query, got, tc.want)
			}
			// Files as they were rebuild nothing: the one server
			// connection of the pool serves on.
			conn := ferrytest.Connect(t, ctx, f.AppDSN())
			before := backendPID(t, ctx, conn)
			again := *cfg
			if err := f.Server.Reload(&again); err != nil {
				t.Fatal(err)
			}
			if after := backendPID(t, ctx, conn); after != before {
				t.Fatalf("a reload with the same TLS files moved the client from server %d to %d: the pool was rebuilt", before, after)
			}
			// A reload that finds a file half written is refused, as
			// one with a bad client TLS file is, and PgBouncer's: the
			// pool keeps the files it read.
			if err := os.WriteFile(file, []byte("-----BEGIN"), 0o600); err != nil {
				t.Fatal(err)
			}
			broken := *cfg
			if err := f.Server.Reload(&broken); err == nil || !strings.Contains(err.Error(), tc.brokenKey) {
				t.Fatalf("a reload that found a TLS file half written: %v; want an error naming %s", err, tc.brokenKey)
			}
			if after := backendPID(t, ctx, conn); after != before {
				t.Fatalf("a reload that found a TLS file half written moved the client from server %d to %d: the pool was rebuilt", before, after)
			}
			if got, err := queryThrough(ctx, f, tc.query); err != nil || got != tc.want {
				t.Fatalf("a new client after a reload that found a TLS file half written: %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// queryThrough runs sql on a new connection through f and returns its one
// text value.
func queryThrough(ctx context.Context, f *ferrytest.Ferry, sql string) (string, error) {
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var got string
	err = conn.QueryRow(ctx, sql).Scan(&got)
	return got, err
}

// backendPID returns the pid of the server backend that runs conn's query.
func backendPID(t *testing.T, ctx context.Context, conn *pgx.Conn) int32 {
	t.Helper()
	var pid int32
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// A server TLS file that does not load stops pgferry's start, naming its
// key, as a client TLS file does and as PgBouncer stops: found only when
// the pool is made, it would fail every login of the database.
func TestAServerTLSFileThatDoesNotLoadStopsTheStart(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	broken := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(broken, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	db := cfg.Databases["app"]
	db.SSLMode, db.SSLRootCert = "verify-full", broken
	cfg.Databases["app"] = db
	_, err := router.New(cfg, router.Options{})
	if err == nil || !strings.Contains(err.Error(), "databases.app.sslrootcert") {
		t.Fatalf("got %v, want an error naming databases.app.sslrootcert", err)
	}
}

// A pool that cannot be made when a client first needs it (its server TLS
// file gone since the start, no reload to notice) refuses the login with
// a FATAL that says so, not with the connection closed and no word.
func TestAClientWhosePoolCannotBeMadeIsToldWhy(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	ca := copyToTemp(t, cluster.CAFile)
	db := cfg.Databases["app"]
	db.Host, db.SSLMode, db.SSLRootCert = "localhost", "verify-full", ca
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err == nil {
		conn.Close(ctx)
		t.Fatal("the client logged in without a pool")
	}
	pe := expectPgError(t, err, "08006")
	if pe.Severity != "FATAL" || !strings.Contains(pe.Message, "database app") {
		t.Fatalf("got %s %q, want a FATAL naming database app", pe.Severity, pe.Message)
	}
	if strings.Contains(pe.Message, ca) {
		t.Fatalf("the client was told pgferry's file path: %q", pe.Message)
	}
}
