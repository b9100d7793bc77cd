package pool

import (
	"crypto/x509"
	"fmt"
	"net"
	"strings"
)

// verifyPeerName checks that the server's certificate names host, as libpq
// does for sslmode=verify-full (fe-secure-openssl.c,
// pgtls_verify_peer_name_matches_certificate_guts, with fe-secure-common.c's
// comparisons): the subjectAltNames, DNS names compared as text (also with
// a host that is an IP address) and IP addresses as addresses; and the
// common name, unless a subjectAltName of the host's kind (DNS for a name,
// IP for an address) is there. PostgreSQL's documentation makes server
// certificates with a common name only (openssl req -subj "/CN=dbhost"),
// which Go's own check refuses. Names match in any case, and "*." at the
// start of one stands for one label of the host.
func verifyPeerName(leaf *x509.Certificate, host string) error {
	ip := net.ParseIP(host)
	checkCN := true
	var names []string // as libpq's message lists them
	for _, name := range leaf.DNSNames {
		if ip == nil {
			checkCN = false
		}
		if nameMatches(name, host) {
			return nil
		}
		names = append(names, name)
	}
	for _, addr := range leaf.IPAddresses {
		if ip != nil {
			checkCN = false
			if addr.Equal(ip) {
				return nil
			}
		}
		names = append(names, addr.String())
	}
	if cn := leaf.Subject.CommonName; checkCN && cn != "" {
		if nameMatches(cn, host) {
			return nil
		}
		names = append(names, cn)
	}
	switch len(names) {
	case 0:
		return fmt.Errorf("could not get server's host name from server certificate")
	case 1:
		return fmt.Errorf("server certificate for %q does not match host name %q", names[0], host)
	case 2:
		return fmt.Errorf("server certificate for %q (and 1 other name) does not match host name %q", names[0], host)
	}
	return fmt.Errorf("server certificate for %q (and %d other names) does not match host name %q", names[0], len(names)-1, host)
}

// nameMatches reports whether a certificate's name matches host: equal in
// any case, or a wildcard "*.rest" whose rest ends host after one label
// (fe-secure-common.c, wildcard_certificate_match).
func nameMatches(name, host string) bool {
	if strings.EqualFold(name, host) {
		return true
	}
	rest, ok := strings.CutPrefix(name, "*")
	if !ok || len(rest) < 2 || rest[0] != '.' || len(host) <= len(rest) {
		return false
	}
	label, suffix := host[:len(host)-len(rest)], host[len(host)-len(rest):]
	return strings.EqualFold(suffix, rest) && !strings.Contains(label, ".")
}
