package router_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// client_tls_ciphers bounds the TLS 1.2 cipher suites a client may use:
// one limited to a suite outside the list fails the handshake, one inside
// it is served with that suite, and one that offers both gets the one the
// list allows. (The test certificates have ECDSA keys.)
func TestClientTLSCiphersBoundTheSuitesATLS12ClientMayUse(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	cfg.ClientTLSCiphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE+CHACHA20:!aRSA"
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name   string
		offers []uint16
		want   uint16 // 0: the handshake fails
	}{
		{"a suite outside the list", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, 0},
		{"a suite the list names", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{"a suite an alias of the list selects", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
		{"one inside and one outside", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, refused := tlsLogin(t, ctx, f.AppDSN(), func(c *tls.Config) {
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = tc.offers
			})
			if refused != (tc.want == 0) {
				t.Fatalf("refused: %v, want %v", refused, tc.want == 0)
			}
			if !refused && st.CipherSuite != tc.want {
				t.Fatalf("the client got %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(tc.want))
			}
		})
	}
}

// server_tls_ciphers bounds the TLS 1.2 cipher suites pgferry offers
// PostgreSQL: the server connection uses the one the list names, and a
// list the server's certificate (ECDSA) cannot serve fails its login.
func TestServerTLSCiphersBoundTheSuitesOfServerConnections(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	tests := []struct {
		name, ciphers string
		want          string // pg_stat_ssl's cipher; "": no server login
	}{
		{"a suite the list names", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
		{"suites an alias selects", "ECDHE+AES128+SHA1", "ECDHE-ECDSA-AES128-SHA"},
		{"suites the server cannot use", "aRSA", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			cfg.ServerTLSProtocols, cfg.ServerTLSCiphers = "tlsv1.2", tc.ciphers
			db := cfg.Databases["app"]
			db.SSLMode = "require"
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			conn, err := pgx.Connect(ctx, f.AppDSN())
			if tc.want == "" {
				if err == nil {
					conn.Close(ctx)
					t.Fatal("the client logged in: pgferry's server connection used a suite outside the list")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var got string
			if err := conn.QueryRow(ctx, "select cipher from pg_stat_ssl where pid = pg_backend_pid()").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("pgferry's server connection uses %s, want %s", got, tc.want)
			}
		})
	}
}

// tlsLogin logs in to dsn over TLS, the client's TLS settings adjusted,
// runs a query and returns the connection's TLS state; refused reports
// that pgferry refused the handshake (any other failure fails the test).
func tlsLogin(t *testing.T, ctx context.Context, dsn string, adjust func(*tls.Config)) (st tls.ConnectionState, refused bool) {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn + " sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	adjust(cc.TLSConfig)
	cc.Fallbacks = nil
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		if !strings.Contains(err.Error(), "handshake failure") {
			t.Fatalf("got %v, want a login or the TLS handshake refused", err)
		}
		return st, true
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return conn.PgConn().Conn().(*tls.Conn).ConnectionState(), false
}
