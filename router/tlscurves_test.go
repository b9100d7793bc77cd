package router_test

import (
	"crypto/tls"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// client_tls_ecdhcurve bounds the key exchange groups a client may use,
// in TLS 1.3 and TLS 1.2 alike: a client that offers none of them fails
// the handshake, one that offers one of them gets it.
func TestClientTLSECDHCurveBoundsTheGroupsAClientMayUse(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	cfg.ClientTLSECDHCurve = "prime256v1:secp384r1"
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name    string
		version uint16
		offers  []tls.CurveID
		want    tls.CurveID // 0: the handshake fails
	}{
		{"TLS 1.3, a group outside the list", tls.VersionTLS13, []tls.CurveID{tls.X25519}, 0},
		{"TLS 1.2, a group outside the list", tls.VersionTLS12, []tls.CurveID{tls.X25519}, 0},
		{"TLS 1.3, one outside and one inside", tls.VersionTLS13, []tls.CurveID{tls.X25519, tls.CurveP384}, tls.CurveP384},
		{"TLS 1.2, one outside and one inside", tls.VersionTLS12, []tls.CurveID{tls.X25519, tls.CurveP256}, tls.CurveP256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, refused := tlsLogin(t, ctx, f.AppDSN(), func(c *tls.Config) {
				c.MinVersion, c.MaxVersion = tc.version, tc.version
				c.CurvePreferences = tc.offers
			})
			if refused != (tc.want == 0) {
				t.Fatalf("refused: %v, want %v", refused, tc.want == 0)
			}
			if !refused && st.CurveID != tc.want {
				t.Fatalf("the client got %s, want %s", st.CurveID, tc.want)
			}
		})
	}
}
