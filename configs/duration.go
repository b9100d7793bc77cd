package configs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that decodes from both PgBouncer's notation
// (plain seconds, possibly fractional: 120, "0.5") and Go duration strings
// ("2m", "500ms"). In TOML it may be written as an integer, a float or a
// string; all three reach [Duration.UnmarshalText]. It encodes in Go notation.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns d in Go notation with redundant zero units dropped
// ("1h" rather than "1h0m0s").
func (d Duration) String() string {
	s := time.Duration(d).String()
	// time.Duration.String always spells out lower units once an hour or
	// minute is present; trim trailing zero units for readability. The result
	// still parses with time.ParseDuration.
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalText implements encoding.TextMarshaler using Go notation.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. A bare number is taken as
// seconds, as in pgbouncer.ini; anything else must parse with
// time.ParseDuration. Negative values decode and are rejected by
// [Config.Validate], which can name the key.
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return fmt.Errorf("invalid duration %q: empty", s)
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) {
			return fmt.Errorf("invalid duration %q: not a finite number", s)
		}
		ns := secs * float64(time.Second)
		if ns > math.MaxInt64 || ns < math.MinInt64 {
			return fmt.Errorf("invalid duration %q: out of range", s)
		}
		*d = Duration(math.Round(ns))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: want seconds (120, 0.5) or a Go duration (2m, 500ms)", s)
	}
	*d = Duration(v)
	return nil
}
