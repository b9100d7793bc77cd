package router_test

// End-to-end tests of TLS through pgferry: clients that must use it, and
// each sslmode pgferry may use to reach PostgreSQL.

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"maps"
	"math/big"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
