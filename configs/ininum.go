package configs

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// setINIValue parses the value of a [pgbouncer] key into v as PgBouncer's
// libusual cfparser.c reads it, where that differs from [setFromString]
// (which the TOML environment overrides use):
//
//   - an integer (CF_INT, cf_set_int) is C's strtol with base 0: 0x10 is
//     16, 010 is 8, 08 is an error;
//   - a boolean is an integer there too (so_reuseport, server_reset_query_always
//     are CF_INT, tested for non-zero): 2 and 0x1 are true. pgferry's
//     words (yes, on, ...) are read as well;
//   - a time (CF_TIME_USEC, cf_set_time_usec) is C's strtod in seconds,
//     truncated to microseconds: 0x10 is 16 s, 1.5 is 1.5 s.
//
// Values PgBouncer refuses may still read here where pgferry has a meaning
// for them (a Go duration such as 2m); an integer out of the field's range
// is refused, where PgBouncer keeps what fits a C int.
func setINIValue(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeFor[Duration]() {
		d, err := parseINISeconds(s)
		if err == nil {
			v.Set(reflect.ValueOf(d))
			return nil
		}
		if !errors.Is(err, errNotACNumber) {
			return err
		}
		// Not a number at all: pgferry's Go durations (2m, 500ms).
		return setFromString(v, s)
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := parseCInt(s, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
		return nil
	case reflect.Bool:
		if n, err := parseCInt(s, 64); err == nil {
			v.SetBool(n != 0)
			return nil
		}
		return setFromString(v, s)
	}
	return setFromString(v, s)
}

// errNotACNumber says a value does not begin as a number in C's syntax.
var errNotACNumber = errors.New("not a number")

// parseCInt reads s as C's strtol(s, &end, 0) does when the whole string
// must be consumed (cf_set_int rejects a partial parse): an optional sign,
// then 0x or 0X and hexadecimal digits, or 0 and octal digits, or decimal
// digits. Go's own base-0 extras (0b, 0o, underscores) are not accepted.
func parseCInt(s string, bits int) (int64, error) {
	digits, neg := s, false
	if digits != "" && (digits[0] == '+' || digits[0] == '-') {
		neg = digits[0] == '-'
		digits = digits[1:]
	}
	base := 10
	switch {
	case len(digits) > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X'):
		base, digits = 16, digits[2:]
	case len(digits) > 1 && digits[0] == '0':
		base = 8
	}
	// ParseUint with an explicit base takes neither a sign nor underscores.
	u, err := strconv.ParseUint(digits, base, 64)
	if err != nil || digits == "" || digits[0] == '+' || digits[0] == '-' {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("integer %q out of range", s)
		}
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	limit := uint64(1)<<(bits-1) - 1
	if neg {
		limit++
	}
	if u > limit {
		return 0, fmt.Errorf("integer %q out of range", s)
	}
	if neg {
		return -int64(u), nil // u == 1<<63 wraps to math.MinInt64, as it should
	}
	return int64(u), nil
}

// parseINISeconds reads s as cf_set_time_usec does: C's strtod (decimal or
// hexadecimal, the latter with or without a p exponent) taken as seconds
// and truncated to microseconds, (usec_t)(USEC * v). It returns
// errNotACNumber when s is no C number at all. Infinities and NaN, which
// strtod reads and PgBouncer converts without a check, are refused.
func parseINISeconds(s string) (Duration, error) {
	if strings.ContainsRune(s, '_') {
		// Go's number syntax, which neither strtod nor a Go duration has.
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 {
		return 0, errNotACNumber
	}
	num := s
	if len(body) > 2 && body[0] == '0' && (body[1] == 'x' || body[1] == 'X') && !strings.ContainsAny(body, "pP") {
		// strtod's hexadecimal needs no exponent; Go's does.
		num += "p0"
	}
	secs, err := strconv.ParseFloat(num, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("invalid duration %q: out of range", s)
	case err != nil:
		return 0, errNotACNumber
	case math.IsNaN(secs) || math.IsInf(secs, 0):
		return 0, fmt.Errorf("invalid duration %q: not a finite number", s)
	}
	usec := math.Trunc(secs * 1e6)
	if math.Abs(usec) > math.MaxInt64/float64(time.Microsecond) {
		return 0, fmt.Errorf("invalid duration %q: out of range", s)
	}
	return Duration(time.Duration(usec) * time.Microsecond), nil
}
