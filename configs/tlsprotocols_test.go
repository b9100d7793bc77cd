package configs

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestTLSVersionsReadsPgBouncersProtocolLists(t *testing.T) {
	tests := []struct {
		value    string
		min, max uint16
		err      string
	}{
		{value: "secure", min: tls.VersionTLS12, max: tls.VersionTLS13},
		{value: "", min: tls.VersionTLS12, max: tls.VersionTLS13},
		{value: "default", min: tls.VersionTLS12, max: tls.VersionTLS13},
		{value: "all", min: tls.VersionTLS10, max: tls.VersionTLS13},
		{value: "legacy", min: tls.VersionTLS10, max: tls.VersionTLS13},
		{value: "tlsv1.3", min: tls.VersionTLS13, max: tls.VersionTLS13},
		{value: "TLSv1.2", min: tls.VersionTLS12, max: tls.VersionTLS12},
		{value: "tlsv1.1, tlsv1.2:tlsv1.3", min: tls.VersionTLS11, max: tls.VersionTLS13},
		{value: "!tlsv1.0", min: tls.VersionTLS11, max: tls.VersionTLS13},
		{value: "all,!tlsv1.3", min: tls.VersionTLS10, max: tls.VersionTLS12},
		{value: "tlsv1.0,tlsv1.3", err: "leaves out tlsv1.1 between tlsv1.0 and tlsv1.3"},
		{value: "secure,!tlsv1.2,!tlsv1.3", err: "allows no TLS version"},
		{value: "sslv3", err: `"sslv3" is not a TLS protocol`},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			min, max, err := TLSVersions(tc.value)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("TLSVersions(%q) = %v, want an error with %q", tc.value, err, tc.err)
				}
				return
			}
			if err != nil || min != tc.min || max != tc.max {
				t.Fatalf("TLSVersions(%q) = %s..%s, %v; want %s..%s", tc.value, tls.VersionName(min), tls.VersionName(max), err, tls.VersionName(tc.min), tls.VersionName(tc.max))
			}
		})
	}
}

// A pgbouncer.ini's client_tls_protocols and server_tls_protocols are
// honoured, not ignored with a warning: one that narrows TLS to 1.3 must
// not let TLS 1.2 in. One pgferry cannot honour is refused, naming its key.
func TestINIKeepsTheTLSProtocolsAndRefusesOnesPgferryCannotHonour(t *testing.T) {
	doc := "[pgbouncer]\nauth_type = trust\nclient_tls_protocols = tlsv1.3\nserver_tls_protocols = TLSv1.2\n" + iniDB
	c, warnings, err := Parse([]byte(doc), "ini", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		if strings.Contains(w, "tls_protocols") {
			t.Errorf("warning %q: the key must be honoured", w)
		}
	}
	if c.ClientTLSProtocols != "tlsv1.3" || c.ServerTLSProtocols != "TLSv1.2" {
		t.Errorf("client_tls_protocols %q, server_tls_protocols %q; want tlsv1.3 and TLSv1.2 as written", c.ClientTLSProtocols, c.ServerTLSProtocols)
	}
	_, _, err = Parse([]byte("[pgbouncer]\nauth_type = trust\nclient_tls_protocols = tlsv1.0,tlsv1.3\n"+iniDB), "ini", nil)
	if err == nil || !strings.Contains(err.Error(), "client_tls_protocols: ") {
		t.Fatalf("got %v, want an error naming client_tls_protocols", err)
	}
}
