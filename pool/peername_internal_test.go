package pool

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"strings"
	"testing"
)

// The cases of libpq's name check (fe-secure-openssl.c,
// pgtls_verify_peer_name_matches_certificate_guts; fe-secure-common.c's
// comparisons and wildcard rule) on certificates as x509 parses them.
func TestVerifyPeerNameMatchesTheHostAsLibpqDoes(t *testing.T) {
	cert := func(cn string, dns []string, ips ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
		for _, ip := range ips {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(ip))
		}
		return c
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		host string
		err  string // "" for a match
	}{
		{"the common name alone", cert("db.example.com", nil), "db.example.com", ""},
		{"the common name in another case", cert("DB.Example.com", nil), "db.example.COM", ""},
		{"another host's common name", cert("db.example.com", nil), "other.example.com", `server certificate for "db.example.com" does not match host name "other.example.com"`},
		{"a wildcard common name for one label", cert("*.example.com", nil), "db.example.com", ""},
		{"a wildcard does not cover two labels", cert("*.example.com", nil), "a.db.example.com", `does not match`},
		{"a wildcard does not cover none", cert("*.example.com", nil), "example.com", `does not match`},
		{"a DNS name of the host", cert("", []string{"x.example.com", "db.example.com"}), "db.example.com", ""},
		{"a DNS name hides the common name", cert("db.example.com", []string{"x.example.com"}), "db.example.com", `server certificate for "x.example.com" does not match host name "db.example.com"`},
		{"an IP address only hides nothing from a name", cert("db.example.com", nil, "10.0.0.1"), "db.example.com", ""},
		{"the host's IP address", cert("", nil, "10.0.0.1", "127.0.0.1"), "127.0.0.1", ""},
		{"an IP address hides the common name from an address", cert("127.0.0.1", nil, "10.0.0.1"), "127.0.0.1", `server certificate for "10.0.0.1" does not match host name "127.0.0.1"`},
		{"a DNS name leaves the common name to an address", cert("127.0.0.1", []string{"db.example.com"}), "127.0.0.1", ""},
		{"an address written as a DNS name", cert("", []string{"127.0.0.1"}), "127.0.0.1", ""},
		{"no name at all", cert("", nil), "db.example.com", "could not get server's host name from server certificate"},
		{"three names, none the host's", cert("", []string{"a.example.com", "b.example.com"}, "10.0.0.1"), "db.example.com", `(and 2 other names)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyPeerName(tc.cert, tc.host)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("got %v, want a match", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want an error with %q", err, tc.err)
			}
		})
	}
}
