package configs

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
)

func TestTLSCurvesReadsOpenSSLNamesInTheirOrder(t *testing.T) {
	for value, want := range map[string][]tls.CurveID{
		"":                      nil,
		"auto":                  nil,
		" AUTO ":                nil,
		"prime256v1":            {tls.CurveP256},
		"secp384r1:prime256v1":  {tls.CurveP384, tls.CurveP256},
		"X25519,P-521":          {tls.X25519, tls.CurveP521},
		"X25519MLKEM768:x25519": {tls.X25519MLKEM768, tls.X25519},
		"secp256r1: secp521r1":  {tls.CurveP256, tls.CurveP521},
	} {
		got, err := TLSCurves(value)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("TLSCurves(%q) = %v, %v; want %v", value, got, err, want)
		}
	}
	for _, value := range []string{"none", "brainpoolP256r1", "secp256k1", ":", "prime256v1:nonsense"} {
		if got, err := TLSCurves(value); err == nil {
			t.Errorf("TLSCurves(%q) = %v; want an error", value, got)
		}
	}
}

// A pgbouncer.ini's client_tls_ecdhcurve is honoured, not ignored with a
// warning; a curve Go does not offer is refused, naming the key.
func TestINIKeepsTheECDHCurveAndRefusesOneGoDoesNotOffer(t *testing.T) {
	c, warnings, err := Parse([]byte("[pgbouncer]\nauth_type = trust\nclient_tls_ecdhcurve = secp384r1\n"+iniDB), "ini", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		if strings.Contains(w, "ecdhcurve") {
			t.Errorf("warning %q: the key must be honoured", w)
		}
	}
	if c.ClientTLSECDHCurve != "secp384r1" {
		t.Errorf("client_tls_ecdhcurve %q; want it as written", c.ClientTLSECDHCurve)
	}
	for _, v := range []string{"none", "brainpoolP512r1"} {
		_, _, err = Parse([]byte("[pgbouncer]\nauth_type = trust\nclient_tls_ecdhcurve = "+v+"\n"+iniDB), "ini", nil)
		if err == nil || !strings.Contains(err.Error(), "client_tls_ecdhcurve: ") {
			t.Fatalf("%s: got %v, want an error naming client_tls_ecdhcurve", v, err)
		}
	}
	if c := Default(); c.ClientTLSECDHCurve != "auto" {
		t.Errorf("the default is %q; want auto, as PgBouncer's", c.ClientTLSECDHCurve)
	}
}
