package router_test

// End-to-end tests of TLS through pgferry: clients that must use it, and
// each sslmode pgferry may use to reach PostgreSQL.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

func TestClientTLSRequiredRefusesPlainClientsAndServesVerifiedOnes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	base := f.AppDSN() + " host=localhost sslrootcert=" + cluster.CAFile

	t.Run("sslmode=disable is refused", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, f.AppDSN())
		if err == nil {
			conn.Close(ctx)
			t.Fatal("a client without TLS connected")
		}
		pe := expectPgError(t, err, "28000")
		if pe.Severity != "FATAL" || pe.Message != "SSL required" {
			t.Fatalf("got %s %q, want FATAL %q", pe.Severity, pe.Message, "SSL required")
		}
	})
	tests := []struct {
		name string
		dsn  string
	}{
		{"sslmode=require", base + " sslmode=require"},
		{"sslmode=verify-full", base + " sslmode=verify-full"},
		{"sslmode=verify-full with SCRAM channel binding", base + " sslmode=verify-full channel_binding=require"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := ferrytest.Connect(t, ctx, tc.dsn)
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatalf("connection is %T, want *tls.Conn", conn.PgConn().Conn())
			}
			var n int
			if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
				t.Fatalf("query over TLS: %d %v", n, err)
			}
		})
	}
}

// writeOtherCA writes a self-signed CA certificate unrelated to the
// cluster's and returns its path.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	certFile, _ := writeSelfSigned(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgferry test other CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	})
	return certFile
}

func TestServerTLSModesReachPostgreSQLAsConfigured(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	otherCA := writeOtherCA(t)
	tests := []struct {
		name     string
		host     string
		sslMode  string
		rootCert string
		wantSSL  bool
		wantFail bool
	}{
		{"disable", cluster.Host, "disable", "", false, false},
		{"require", cluster.Host, "require", "", true, false},
		{"verify-ca", cluster.Host, "verify-ca", cluster.CAFile, true, false},
		{"verify-full by host name", "localhost", "verify-full", cluster.CAFile, true, false},
		{"verify-full against another CA fails", "localhost", "verify-full", otherCA, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			db := cfg.Databases["app"]
			db.Host, db.SSLMode, db.SSLRootCert = tc.host, tc.sslMode, tc.rootCert
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			conn, err := pgx.Connect(ctx, f.AppDSN())
			if tc.wantFail {
				if err == nil {
					defer conn.Close(ctx)
					_, err = conn.Exec(ctx, "select 1")
				}
				if err == nil {
					t.Fatal("pgferry logged in to a server whose certificate its CA did not sign")
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "08") {
					t.Fatalf("got %v, want a connection error (SQLSTATE class 08)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var ssl bool
			if err := conn.QueryRow(ctx, "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != tc.wantSSL {
				t.Fatalf("server connection ssl = %v, want %v", ssl, tc.wantSSL)
			}
		})
	}
}

// sslmode allow towards a server is libpq's: a connection without TLS
// first, and one with TLS if the server refuses that one (PgBouncer's
// documentation gives server_tls_sslmode allow the same intent: "if server
// rejects plain, try TLS"). pgx's allow does the same straight to
// PostgreSQL, which the test compares: a database whose pg_hba.conf
// rejects connections without TLS is reached over TLS, any other without.
func TestServerSSLModeAllowTriesTLSWhenTheServerRefusesAPlainConnection(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, tlsOnly := configWithOwnDatabase(t)
	if err := cluster.AddHBA("hostnossl " + tlsOnly + " all 127.0.0.1/32 reject"); err != nil {
		t.Fatal(err)
	}
	plainToo := cluster.CreateDatabase(t, pgtest.AppUser)
	const sslQuery = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
	tests := []struct{ name, dbname string }{
		{"a database that refuses connections without TLS", tlsOnly},
		{"a database that takes them", plainToo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dbname := tc.dbname
			direct := ferrytest.Connect(t, ctx, cluster.DSN(dbname, pgtest.AppUser, ferrytest.Password)+" sslmode=allow")
			var want bool
			if err := direct.QueryRow(ctx, sslQuery).Scan(&want); err != nil {
				t.Fatal(err)
			}

			cfg := *cfg
			cfg.Databases = maps.Clone(cfg.Databases)
			db := cfg.Databases["app"]
			db.DBName, db.SSLMode = dbname, "allow"
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, &cfg)
			conn, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				t.Fatalf("through pgferry with sslmode allow (straight to PostgreSQL pgx's allow connects, ssl %v): %v", want, err)
			}
			defer conn.Close(ctx)
			var got bool
			if err := conn.QueryRow(ctx, sslQuery).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("through pgferry the server connection has ssl %v; straight to PostgreSQL pgx's allow gets %v", got, want)
			}
		})
	}
}

// client_tls_protocols and server_tls_protocols bound the TLS versions, as
// PgBouncer's do: TLS 1.3 only keeps a TLS 1.2 client out, TLS 1.2 only
// gives a client that offers 1.3 too TLS 1.2, and server_tls_protocols
// tlsv1.2 makes pgferry's server connection TLS 1.2, which PostgreSQL
// reports in pg_stat_ssl.
func TestTheTLSProtocolsSettingsBoundTheVersionsTowardsClientsAndServers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	connect := func(f *ferrytest.Ferry, maxVersion uint16) (*pgx.Conn, error) {
		cc, err := pgx.ParseConfig(f.AppDSN() + " sslmode=require")
		if err != nil {
			t.Fatal(err)
		}
		cc.TLSConfig.MaxVersion = maxVersion
		cc.Fallbacks = nil // (no retry without TLS)
		return pgx.ConnectConfig(ctx, cc)
	}
	versionOf := func(conn *pgx.Conn) string {
		return tls.VersionName(conn.PgConn().Conn().(*tls.Conn).ConnectionState().Version)
	}
	tests := []struct {
		name             string
		client, server   string
		clientMaxVersion uint16
		// wantClient is the version the client gets, "" for a refusal;
		// wantServer pg_stat_ssl's version of pgferry's server connection.
		wantClient, wantServer string
	}{
		{"the defaults give a client and the server TLS 1.3", "secure", "secure", tls.VersionTLS13, "TLS 1.3", "TLSv1.3"},
		{"client_tls_protocols tlsv1.3 refuses a TLS 1.2 client", "tlsv1.3", "secure", tls.VersionTLS12, "", ""},
		{"client_tls_protocols tlsv1.3 serves a TLS 1.3 client", "tlsv1.3", "secure", tls.VersionTLS13, "TLS 1.3", "TLSv1.3"},
		{"client_tls_protocols tlsv1.2 gives a client TLS 1.2", "tlsv1.2", "secure", tls.VersionTLS13, "TLS 1.2", "TLSv1.3"},
		{"server_tls_protocols tlsv1.2 gives the server connection TLS 1.2", "secure", "tlsv1.2", tls.VersionTLS13, "TLS 1.3", "TLSv1.2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			offerClientTLS(cfg, "require")
			cfg.ClientTLSProtocols, cfg.ServerTLSProtocols = tc.client, tc.server
			db := cfg.Databases["app"]
			db.SSLMode = "require"
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			conn, err := connect(f, tc.clientMaxVersion)
			if tc.wantClient == "" {
				if err == nil {
					conn.Close(ctx)
					t.Fatal("the client connected")
				}
				if !strings.Contains(err.Error(), "protocol version") {
					t.Fatalf("got %v, want the TLS handshake refused for its protocol version", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if got := versionOf(conn); got != tc.wantClient {
				t.Errorf("the client got %s, want %s", got, tc.wantClient)
			}
			var got string
			if err := conn.QueryRow(ctx, "select version from pg_stat_ssl where pid = pg_backend_pid()").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.wantServer {
				t.Errorf("pgferry's server connection has %s, want %s", got, tc.wantServer)
			}
		})
	}
}

// sslmode verify-full towards a server checks its certificate's name as
// libpq does (fe-secure-openssl.c, verify_peer_name_matches_certificate):
// the subjectAltNames of the host's kind, and the common name when the
// certificate has none, which is what the certificate recipe of
// PostgreSQL's documentation makes (openssl req -subj "/CN=dbhost"); Go's
// own check ignores the common name. Each case runs psql straight to a
// PostgreSQL presenting the certificate, and pgferry.
func TestServerVerifyFullMatchesTheHostNameAsLibpqDoes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "verify-full test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	// (t.TempDir's parent is root's, mode 0700: the server could not
	// reach its files there.)
	dir, err := os.MkdirTemp("", "pgferry-verify-full-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The server runs as the owner of the test cluster's data directory,
	// and PostgreSQL reads only a key file of its own, mode 0600.
	fi, err := os.Stat(cluster.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	owner := fi.Sys().(*syscall.Stat_t)
	issue := func(name string, tmpl *x509.Certificate) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: kder}} {
			if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, int(owner.Uid), int(owner.Gid)); err != nil {
				t.Fatal(err)
			}
		}
		return certFile, keyFile
	}
	tests := []struct {
		name string
		tmpl *x509.Certificate
		host string
		want bool // psql's verdict, which pgferry must share
	}{
		{"common name only, the host's", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}}, "localhost", true},
		{"common name only, another host's", &x509.Certificate{SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "db.example.com"}}, "localhost", false},
		{"a DNS name of another host hides the common name", &x509.Certificate{SerialNumber: big.NewInt(5), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"db.example.com"}}, "localhost", false},
		{"common name only, the IP address", &x509.Certificate{SerialNumber: big.NewInt(6), Subject: pkix.Name{CommonName: "127.0.0.1"}}, "127.0.0.1", true},
	}
	certFile, keyFile := issue("server", tests[0].tmpl)
	server, err := pgtest.Start(pgtest.Options{TLS: true, Conf: map[string]string{"ssl_cert_file": certFile, "ssl_key_file": keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Stop)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if i > 0 {
				cert, key := issue(fmt.Sprint("server", i), tc.tmpl)
				presents(t, ctx, server, cert, key, tc.tmpl.SerialNumber)
			}
			dsn := fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=verify-full sslrootcert=%s",
				tc.host, server.Port, pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword, caFile)
			out, err := osexec.CommandContext(ctx, pgtest.Binary("psql"), "-X", "-At", "-c", "select 1", dsn).CombinedOutput()
			if psqlOK := err == nil; psqlOK != tc.want {
				t.Fatalf("psql straight to PostgreSQL: %v %s; the case expects it to connect: %v", err, out, tc.want)
			}

			cfg := ferrytest.Config(t, cluster)
			db := cfg.Databases["app"]
			db.Host, db.Port, db.DBName, db.SSLMode, db.SSLRootCert = tc.host, server.Port, pgtest.AppDatabase, "verify-full", caFile
			db.Password = configs.Secret(pgtest.AppPassword)
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			_, err = queryThrough(ctx, f, "select 'through pgferry'")
			if gotOK := err == nil; gotOK != tc.want {
				t.Fatalf("through pgferry: %v; psql straight to PostgreSQL connects: %v", err, tc.want)
			}
		})
	}
}

// presents points server at another certificate and key and waits until
// new connections get the certificate with the given serial number.
func presents(t *testing.T, ctx context.Context, server *pgtest.Cluster, cert, key string, serial *big.Int) {
	t.Helper()
	for _, q := range []string{
		fmt.Sprintf("alter system set ssl_cert_file = '%s'", cert),
		fmt.Sprintf("alter system set ssl_key_file = '%s'", key),
		"select pg_reload_conf()",
	} {
		if err := server.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ferrytest.Eventually(t, 20*time.Second, "the server presents its new certificate", func() (bool, error) {
		conn, err := pgx.Connect(ctx, server.DSN(pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword)+" sslmode=require")
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		got := conn.PgConn().Conn().(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
		return got.Cmp(serial) == 0, nil
	})
}
