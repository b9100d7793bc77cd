package lag

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errBadLSN is wrapped by every ParseLSN error.
var errBadLSN = errors.New("invalid LSN")

// ParseLSN parses a pg_lsn in PostgreSQL's text form, two hexadecimal numbers
// of up to 8 digits separated by a slash ("16/B374D848"), into the 64-bit WAL
// position it stands for: the high word before the slash, the low word after
// (src/backend/utils/adt/pg_lsn.c, pg_lsn_in_internal). Differences of two
// results are byte distances in the WAL, as pg_wal_lsn_diff computes them.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || !isHex8(hi) || !isHex8(lo) {
		return 0, fmt.Errorf("%w %q", errBadLSN, s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w %q", errBadLSN, s)
	}
	return h<<32 | l, nil
}

// isHex8 reports whether s is 1 to 8 hexadecimal digits (no sign, no 0x),
// which is what pg_lsn_in accepts for each half.
func isHex8(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// FormatLSN formats a WAL position as PostgreSQL prints a pg_lsn
// ("16/B374D848"), for logs and the admin console. ParseLSN(FormatLSN(x)) == x.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}
