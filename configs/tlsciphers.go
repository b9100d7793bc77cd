package configs

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// cipherSuites are the TLS 1.0 to 1.2 cipher suites Go's crypto/tls and
// OpenSSL 3 (which PgBouncer is built with) both have, under OpenSSL's
// names, with the attributes OpenSSL's cipher-list aliases select them by
// (`openssl ciphers -v ALL`: Kx, Au, Enc, Mac and the version column).
// Go's 3DES and RC4 suites are left out: OpenSSL 3 has neither.
var cipherSuites = [...]struct {
	name                    string
	id                      uint16
	kx, au, enc, mac, proto string
}{
	{"ECDHE-ECDSA-AES256-GCM-SHA384", tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "ECDH", "ECDSA", "AESGCM256", "AEAD", "TLSv1.2"},
	{"ECDHE-RSA-AES256-GCM-SHA384", tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "ECDH", "RSA", "AESGCM256", "AEAD", "TLSv1.2"},
	{"ECDHE-ECDSA-CHACHA20-POLY1305", tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "ECDH", "ECDSA", "CHACHA20", "AEAD", "TLSv1.2"},
	{"ECDHE-RSA-CHACHA20-POLY1305", tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "ECDH", "RSA", "CHACHA20", "AEAD", "TLSv1.2"},
	{"ECDHE-ECDSA-AES128-GCM-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "ECDH", "ECDSA", "AESGCM128", "AEAD", "TLSv1.2"},
	{"ECDHE-RSA-AES128-GCM-SHA256", tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "ECDH", "RSA", "AESGCM128", "AEAD", "TLSv1.2"},
	{"ECDHE-ECDSA-AES128-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, "ECDH", "ECDSA", "AES128", "SHA256", "TLSv1.2"},
	{"ECDHE-RSA-AES128-SHA256", tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, "ECDH", "RSA", "AES128", "SHA256", "TLSv1.2"},
	{"ECDHE-ECDSA-AES256-SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, "ECDH", "ECDSA", "AES256", "SHA1", "TLSv1"},
	{"ECDHE-RSA-AES256-SHA", tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, "ECDH", "RSA", "AES256", "SHA1", "TLSv1"},
	{"ECDHE-ECDSA-AES128-SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, "ECDH", "ECDSA", "AES128", "SHA1", "TLSv1"},
	{"ECDHE-RSA-AES128-SHA", tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, "ECDH", "RSA", "AES128", "SHA1", "TLSv1"},
	{"AES256-GCM-SHA384", tls.TLS_RSA_WITH_AES_256_GCM_SHA384, "RSA", "RSA", "AESGCM256", "AEAD", "TLSv1.2"},
	{"AES128-GCM-SHA256", tls.TLS_RSA_WITH_AES_128_GCM_SHA256, "RSA", "RSA", "AESGCM128", "AEAD", "TLSv1.2"},
	{"AES128-SHA256", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, "RSA", "RSA", "AES128", "SHA256", "TLSv1.2"},
	{"AES256-SHA", tls.TLS_RSA_WITH_AES_256_CBC_SHA, "RSA", "RSA", "AES256", "SHA1", "SSLv3"},
	{"AES128-SHA", tls.TLS_RSA_WITH_AES_128_CBC_SHA, "RSA", "RSA", "AES128", "SHA1", "SSLv3"},
}

// cipherSet is a set of cipherSuites, one bit each.
type cipherSet uint32

const allCiphers cipherSet = 1<<len(cipherSuites) - 1

// cipherAlias returns the suites an OpenSSL cipher-list word selects: a
// suite's OpenSSL name (or Go's, the IANA name), or an alias of OpenSSL's
// (ciphers(1)). ok is false for a word that names nothing pgferry knows:
// OpenSSL skips such a word, and so does TLSCipherSuites. Aliases for
// what Go does not have (DHE, CAMELLIA, PSK, MEDIUM, aNULL ...) select
// nothing, as unknown words do.
func cipherAlias(word string) (set cipherSet, ok bool) {
	match := func(f func(i int) bool) cipherSet {
		var s cipherSet
		for i := range cipherSuites {
			if f(i) {
				s |= 1 << i
			}
		}
		return s
	}
	for i, c := range cipherSuites {
		if word == c.name || word == tls.CipherSuiteName(c.id) {
			return 1 << i, true
		}
	}
	cs := &cipherSuites
	switch word {
	case "ALL", "DEFAULT", "HIGH":
		return allCiphers, true
	case "RSA", "kRSA":
		return match(func(i int) bool { return cs[i].kx == "RSA" }), true
	case "aRSA":
		return match(func(i int) bool { return cs[i].au == "RSA" }), true
	case "ECDH", "ECDHE", "EECDH", "kECDHE", "kEECDH":
		return match(func(i int) bool { return cs[i].kx == "ECDH" }), true
	case "ECDSA", "aECDSA":
		return match(func(i int) bool { return cs[i].au == "ECDSA" }), true
	case "AES":
		return match(func(i int) bool { return strings.HasPrefix(cs[i].enc, "AES") }), true
	case "AES128", "AES256":
		return match(func(i int) bool { return strings.HasPrefix(cs[i].enc, "AES") && strings.HasSuffix(cs[i].enc, word[3:]) }), true
	case "AESGCM":
		return match(func(i int) bool { return strings.HasPrefix(cs[i].enc, "AESGCM") }), true
	case "CHACHA20":
		return match(func(i int) bool { return cs[i].enc == "CHACHA20" }), true
	case "SHA1", "SHA":
		return match(func(i int) bool { return cs[i].mac == "SHA1" }), true
	case "SHA256":
		return match(func(i int) bool { return cs[i].mac == "SHA256" }), true
	case "AEAD":
		return match(func(i int) bool { return cs[i].mac == "AEAD" }), true
	case "TLSv1.2":
		return match(func(i int) bool { return cs[i].proto == "TLSv1.2" }), true
	case "TLSv1", "TLSv1.0":
		return match(func(i int) bool { return cs[i].proto == "TLSv1" }), true
	case "SSLv3":
		return match(func(i int) bool { return cs[i].proto == "SSLv3" }), true
	}
	return 0, false
}

// TLSCipherSuites returns the cipher suites a value of client_tls_ciphers
// or server_tls_ciphers allows, for tls.Config.CipherSuites: nil (Go's
// defaults) for "default", "secure", "normal", "fast" and empty, which
// PgBouncer leaves to OpenSSL's defaults (libusual's
// tls_config_set_ciphers). Anything else is read as an OpenSSL cipher
// list (ciphers(1)): words separated by colons (or commas or spaces), each
// a suite's OpenSSL name (ECDHE-RSA-AES256-GCM-SHA384) or an alias (HIGH,
// ALL, ECDHE, aRSA, AESGCM, CHACHA20, SHA1, TLSv1.2 ...), words joined by
// "+" meaning all of them, "!" before one taking its suites out for good,
// "-" taking them out until a later word adds them, "+" before one and
// "@STRENGTH" or "@SECLEVEL=n" reordering (Go orders the suites itself).
// As OpenSSL does, a word it does not know is skipped, and a list that
// leaves no suite is an error. The suites are TLS 1.0 to 1.2's: Go does
// not let TLS 1.3's be chosen (it uses all three), so
// client_tls13_ciphers and server_tls13_ciphers are not supported.
func TLSCipherSuites(value string) ([]uint16, error) {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "", "default", "secure", "normal", "fast":
		return nil, nil
	}
	var set, killed cipherSet
	for _, item := range strings.FieldsFunc(value, func(r rune) bool { return r == ':' || r == ',' || r == ' ' || r == ';' }) {
		op := byte(0)
		switch item[0] {
		case '!', '-', '+':
			op, item = item[0], item[1:]
		case '@':
			continue // @STRENGTH, @SECLEVEL=n: order and key sizes
		}
		m, known := allCiphers, item != ""
		for _, w := range strings.Split(item, "+") {
			s, ok := cipherAlias(w)
			m &= s
			known = known && ok
		}
		if !known {
			continue
		}
		switch op {
		case '!':
			killed |= m
			set &^= m
		case '-':
			set &^= m
		case 0:
			set |= m &^ killed
		}
	}
	if set == 0 {
		return nil, fmt.Errorf("%q names no TLS 1.2 cipher suite pgferry knows: use OpenSSL's names (ECDHE-RSA-AES128-GCM-SHA256) or aliases (HIGH, ECDHE+AESGCM), or default; TLS 1.3's suites cannot be chosen", value)
	}
	var ids []uint16
	for i, c := range cipherSuites {
		if set&(1<<i) != 0 {
			ids = append(ids, c.id)
		}
	}
	return ids, nil
}
