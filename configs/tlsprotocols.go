package configs

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// tlsVersions are the versions client_tls_protocols and
// server_tls_protocols name, in order.
var tlsVersions = [...]struct {
	name string
	id   uint16
}{
	{"tlsv1.0", tls.VersionTLS10},
	{"tlsv1.1", tls.VersionTLS11},
	{"tlsv1.2", tls.VersionTLS12},
	{"tlsv1.3", tls.VersionTLS13},
}

// Sets of tlsVersions, one bit each.
const (
	tlsAll    = 0b1111 // all, legacy, tlsv1
	tlsSecure = 0b1100 // secure, default: TLS 1.2 and 1.3
)

// TLSVersions returns the lowest and highest TLS version a value of
// client_tls_protocols or server_tls_protocols allows, read as PgBouncer
// reads it (libusual's tls_config_parse_protocols): names separated by
// commas or colons, in any case, each tlsv1.0 to tlsv1.3 or a set ("all"
// and "legacy": 1.0 to 1.3; "secure" and "default": 1.2 and 1.3; "tlsv1":
// all of them), "!" before one taking it out ("!tlsv1.0" alone: all but
// it). Empty is "secure", the default. Go's crypto/tls takes a range of
// versions, where OpenSSL can leave one out in the middle: such a value is
// an error here.
func TLSVersions(value string) (min, max uint16, err error) {
	if strings.TrimSpace(value) == "" {
		value = "secure"
	}
	set := 0
	for _, tok := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ':' }) {
		tok = strings.ToLower(strings.TrimSpace(tok))
		negate := strings.HasPrefix(tok, "!")
		if negate {
			tok = tok[1:]
			if set == 0 {
				set = tlsAll
			}
		}
		bits := 0
		switch tok {
		case "all", "legacy", "tlsv1":
			bits = tlsAll
		case "secure", "default":
			bits = tlsSecure
		default:
			for i, v := range tlsVersions {
				if tok == v.name {
					bits = 1 << i
				}
			}
		}
		if bits == 0 {
			return 0, 0, fmt.Errorf("%q is not a TLS protocol: use tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure or legacy", tok)
		}
		if negate {
			set &^= bits
		} else {
			set |= bits
		}
	}
	if set == 0 {
		return 0, 0, fmt.Errorf("%q allows no TLS version", value)
	}
	lo, hi := -1, -1
	for i := range tlsVersions {
		if set&(1<<i) != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	for i := lo; i <= hi; i++ {
		if set&(1<<i) == 0 {
			return 0, 0, fmt.Errorf("%q leaves out %s between %s and %s: pgferry takes a range of versions", value, tlsVersions[i].name, tlsVersions[lo].name, tlsVersions[hi].name)
		}
	}
	return tlsVersions[lo].id, tlsVersions[hi].id, nil
}
