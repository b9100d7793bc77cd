package configs

import "fmt"

// redacted is what every printed form of a Secret shows.
const redacted = "[redacted]"

// Secret holds a password or similar credential. Every way of printing it
// (String, GoString, all fmt verbs, MarshalText and therefore JSON) yields
// "[redacted]", so a Secret is safe inside structs that get logged or wrapped
// into errors. Use [Secret.Reveal] where the value is really needed.
type Secret string

// Reveal returns the secret value. Call it only where the value is handed to
// an authentication exchange or written back to the user's own config file.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer and returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer and returns "[redacted]".
func (s Secret) GoString() string { return redacted }

// Format implements fmt.Formatter so that no verb (%v, %+v, %#v, %s, %q, %x,
// ...) reaches the underlying string. Width and flags are ignored.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprint(f, `"`+redacted+`"`)
		return
	}
	fmt.Fprint(f, redacted)
}

// MarshalText implements encoding.TextMarshaler and returns "[redacted]", so
// that JSON or TOML encodings of a Config never leak the value by accident.
// [Config.ToTOML] is the deliberate exception.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it stores text verbatim.
func (s *Secret) UnmarshalText(text []byte) error {
	*s = Secret(text)
	return nil
}
