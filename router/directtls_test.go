package router_test

// Direct TLS (PostgreSQL 17's sslnegotiation=direct): a client that starts
// the TLS handshake at once, without an SSLRequest, and offers ALPN
// "postgresql".

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAClientThatStartsTLSDirectlyIsServedAsByPostgreSQL17(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name       string
		maxVersion uint16
	}{
		{"over TLS 1.3", tls.VersionTLS13},
		{"over TLS 1.2", tls.VersionTLS12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(f.AppDSN() + " host=localhost sslmode=verify-full sslnegotiation=direct sslrootcert=" + cluster.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			cc.TLSConfig.MaxVersion = tc.maxVersion
			cc.Fallbacks = nil
			conn, err := pgx.ConnectConfig(ctx, cc)
			if err != nil {
				t.Fatalf("a direct TLS client could not log in: %v", err)
			}
			defer conn.Close(ctx)
			tc2, ok := conn.PgConn().Conn().(*tls.Conn)
			if !ok {
				t.Fatalf("connection is %T, want *tls.Conn", conn.PgConn().Conn())
			}
			if st := tc2.ConnectionState(); st.NegotiatedProtocol != "postgresql" || st.Version != tc.maxVersion {
				t.Fatalf("ALPN %q over %s, want postgresql over %s", st.NegotiatedProtocol, tls.VersionName(st.Version), tls.VersionName(tc.maxVersion))
			}
			for i := range 3 {
				var n int
				if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("query %d over direct TLS: %d %v", i, n, err)
				}
			}
		})
	}
}

// PostgreSQL 17 refuses a direct TLS client that did not negotiate ALPN
// "postgresql" (backend_startup.c: "received direct SSL connection request
// without ALPN protocol negotiation extension", logged, not sent): its
// connection closes after the handshake. One that asks for another
// protocol fails the handshake (no_application_protocol).
func TestADirectTLSClientWithoutALPNPostgresqlIsNotServed(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name      string
		protos    []string
		handshake string // "": the handshake completes
	}{
		{"no ALPN", nil, ""},
		{"ALPN http/1.1", []string{"http/1.1"}, "no application protocol"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tls.Client(dialFerry(t, f), &tls.Config{InsecureSkipVerify: true, NextProtos: tc.protos})
			c.SetDeadline(time.Now().Add(10 * time.Second))
			err := c.Handshake()
			if tc.handshake != "" {
				if err == nil || !strings.Contains(err.Error(), tc.handshake) {
					t.Fatalf("handshake: %v, want %q", err, tc.handshake)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			c.Write(startupMessage(t, ferrytest.User, "app"))
			frames := readUntilClosed(t, c)
			if len(frames) != 0 {
				t.Fatalf("got %s, want the connection closed without an answer", describe(frames))
			}
		})
	}
	// pgferry still serves clients that use ALPN as libpq 17 does.
	c := tls.Client(dialFerry(t, f), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
	c.Write(startupMessage(t, ferrytest.User, "app"))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' || fr.typ == 'E' })
	if len(frames) == 0 || frames[len(frames)-1].typ != 'R' {
		t.Fatalf("got %s (%v), want an authentication request", describe(frames), err)
	}
}
