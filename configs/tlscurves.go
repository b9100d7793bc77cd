package configs

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// tlsCurveNames are the key exchange groups Go offers, by the names
// OpenSSL knows them by (openssl ecparam -list_curves, and TLS 1.3's group
// names), lower case.
var tlsCurveNames = map[string]tls.CurveID{
	"prime256v1": tls.CurveP256, "secp256r1": tls.CurveP256, "p-256": tls.CurveP256,
	"secp384r1": tls.CurveP384, "p-384": tls.CurveP384,
	"secp521r1": tls.CurveP521, "p-521": tls.CurveP521,
	"x25519":         tls.X25519,
	"x25519mlkem768": tls.X25519MLKEM768,
}

// TLSCurves returns the key exchange groups a value of
// client_tls_ecdhcurve allows, for tls.Config.CurvePreferences: nil (Go's
// defaults) for "auto" and empty, as PgBouncer leaves "auto" to OpenSSL;
// otherwise the curves named, separated by colons or commas (OpenSSL's
// groups list: prime256v1, secp384r1, secp521r1, X25519, ...), in that
// order of preference. A name Go does not offer is an error, as OpenSSL
// refuses it; so is "none" (PgBouncer's "no ECDH", which Go cannot do: its
// TLS 1.3 and TLS 1.2 handshakes all use ECDHE, and it has no DHE).
func TLSCurves(value string) ([]tls.CurveID, error) {
	v := strings.ToLower(strings.TrimSpace(value))
	switch v {
	case "", "auto":
		return nil, nil
	case "none":
		return nil, fmt.Errorf(`"none" is not supported: every TLS handshake of Go's uses ECDHE`)
	}
	var curves []tls.CurveID
	for _, name := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		id, ok := tlsCurveNames[name]
		if !ok {
			return nil, fmt.Errorf("unknown curve %q (known: prime256v1, secp384r1, secp521r1, X25519, X25519MLKEM768, or auto)", name)
		}
		curves = append(curves, id)
	}
	if len(curves) == 0 {
		return nil, fmt.Errorf("no curve in %q", value)
	}
	return curves, nil
}
