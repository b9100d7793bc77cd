// This file finds calls of functions whose effect outlives the
// transaction: session advisory locks and set_config not local to it.

package classify

import (
	"bytes"
	"encoding/binary"
)

// Pin reasons of function calls whose effect outlives the transaction.
const (
	pinAdvisoryLock = "session advisory lock"
	pinSetConfig    = "set_config not local to the transaction"
	pinEscapedCall  = "call of a function named with Unicode escapes"
)

// sessionFunctionPin returns the pin reason of a statement that may call a
// function whose effect outlives its transaction, or "": a session
// advisory lock (advisoryLockAt), set_config whose third
// argument, is_local, is not a literal true (set_config('app.tenant',
// '42', false) is a session's SET, which pgferry does not track), or any
// function named with Unicode escapes pgferry does not decode
// (U&"set\005fconfig"(...): escapedNameBefore), whichever it is.
//
// A call needs a '(' after the name, so a text with no '(' at all, as most
// short queries are, needs no search for the names: one vectorised
// bytes.IndexByte. Both names have a '_', and the search jumps from one
// '_' to the next; an escaped name needs a '&', and its search from one
// '&' to the next.
func sessionFunctionPin(stmt []byte) string {
	if bytes.IndexByte(stmt, '(') < 0 {
		return ""
	}
	for i := 0; ; i++ {
		j := bytes.IndexByte(stmt[i:], '_')
		if j < 0 {
			break
		}
		i += j
		if i+1 == len(stmt) {
			break
		}
		// The letter after the '_' tells the names apart, and rules out
		// most other '_'s (snake_case names) with one comparison.
		switch stmt[i+1] | 0x20 {
		case 'l':
			if advisoryLockAt(stmt, i) {
				return pinAdvisoryLock
			}
		case 'c':
			if i >= 3 && i+7 <= len(stmt) && (i == 3 || !identCont(stmt[i-4])) &&
				lowerIs(stmt[i-3:i], "set") && lowerIs(stmt[i+1:i+7], "config") {
				args := stmt[i+7:]
				if i > 3 && stmt[i-4] == '"' && len(args) > 0 && args[0] == '"' {
					args = args[1:] // "set_config"(...), a quoted name
				}
				if local, call := setConfigIsLocal(args); call && !local {
					return pinSetConfig
				}
			}
		}
	}
	if bytes.IndexByte(stmt, '&') >= 0 && escapedNameBefore(stmt, '(') {
		return pinEscapedCall
	}
	return ""
}

// FunctionCallPin returns the pin reason of a FunctionCall message (the
// protocol's own way to call a function, by its OID) that calls one whose
// effect outlives the transaction, or "": the session advisory lock
// functions, and set_config, whose is_local it does not read (pinned
// whatever it is: the safe side). The OIDs are PostgreSQL's built-in ones,
// fixed in pg_proc.dat.
func FunctionCallPin(oid uint32) string {
	switch oid {
	case 2880, 2881, 2882, 2883, 2886, 2887, 2888, 2889: // pg_[try_]advisory_lock[_shared], bigint and (int, int)
		return pinAdvisoryLock
	case 2078: // set_config(text, text, boolean)
		return pinSetConfig
	}
	return ""
}

// lowerIs reports whether b, folded to lower case (ASCII letters only),
// is word (lower case letters).
func lowerIs(b []byte, word string) bool {
	if len(b) != len(word) {
		return false
	}
	for k := range len(b) {
		if b[k]|0x20 != word[k] {
			return false
		}
	}
	return true
}

// setConfigIsLocal reads the arguments of a set_config call from b, which
// follows the name: call reports that a '(' follows (after blanks and
// comments), local that the third argument is a literal true (true, or a
// quoted 't', 'true', 'on', 'yes', 'y', '1', as PostgreSQL reads a
// boolean). Arguments are split at commas outside parentheses, quotes and
// comments; an expression, a parameter ($3) or an argument list it cannot
// read is not local (the client is pinned: the safe side). So are
// arguments with a dollar quote, an escape string (E'...') or a backslash
// before the third: the split does not read those, and a ", true)" inside
// one must not pass for the third argument.
func setConfigIsLocal(b []byte) (local, call bool) {
	b = skipSpace(b)
	if len(b) == 0 || b[0] != '(' {
		return false, false
	}
	b = b[1:]
	arg, depth, start := 0, 0, 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '(':
			depth++
		case ')', ',':
			if c == ')' && depth > 0 {
				depth--
				continue
			}
			if c == ',' && depth > 0 {
				continue
			}
			if arg == 2 {
				return literalTrue(b[start:i]), true
			}
			if c == ')' {
				return false, true // fewer than three arguments
			}
			arg, start = arg+1, i+1
		case '$', '\\':
			if c == '$' && i+1 < len(b) && b[i+1] >= '0' && b[i+1] <= '9' {
				continue // a parameter, $n
			}
			return false, true // a dollar quote, or an escape
		case '\'', '"':
			if c == '\'' && escapeString(b, i) {
				return false, true // E'...': backslashes escape quotes
			}
			k := bytes.IndexByte(b[i+1:], c)
			if k < 0 {
				return false, true
			}
			if c == '\'' && bytes.IndexByte(b[i+1:i+1+k], '\\') >= 0 {
				// With standard_conforming_strings off (a client may set
				// it) the backslash escapes: the string may end elsewhere.
				return false, true
			}
			i += k + 1 // (a doubled quote reads as two strings: same split)
		case '-', '/':
			if r := skipSpace(b[i:]); len(r) != len(b)-i {
				i = len(b) - len(r) - 1
			}
		}
	}
	return false, true
}

// literalTrue reports whether arg (blanks and comments around it allowed)
// is a literal PostgreSQL reads as boolean true.
func literalTrue(arg []byte) bool {
	arg = skipSpace(arg)
	arg = bytes.TrimRight(arg, " \t\n\r\f")
	for _, t := range [...]string{"true", "'t'", "'true'", "'on'", "'yes'", "'y'", "'1'"} {
		if lowerIs(arg, t) {
			return true
		}
	}
	return false
}

// advisoryLockAt reports whether the '_' at stmt[i] is the one of
// "advisory_lock", which pg_advisory_lock, pg_try_advisory_lock and their
// _shared forms have and pg_advisory_xact_lock ("advisory_xact") and
// pg_advisory_unlock do not. The match ignores ASCII case.
//
// It runs at every '_' of every statement with a '(', so it compares the
// 8 bytes before and the 4 after whole, folded to lower case by setting
// bit 0x20 of every byte: all of them must be letters, for which that is
// exact.
func advisoryLockAt(stmt []byte, i int) bool {
	return i >= 8 && i+5 <= len(stmt) &&
		binary.LittleEndian.Uint64(stmt[i-8:])|0x2020202020202020 == advisoryWord &&
		binary.LittleEndian.Uint32(stmt[i+1:])|0x20202020 == lockWord
}

var (
	advisoryWord = binary.LittleEndian.Uint64([]byte("advisory"))
	lockWord     = binary.LittleEndian.Uint32([]byte("lock"))
)
