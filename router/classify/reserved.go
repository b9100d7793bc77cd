// This file finds SQL statements that name a server-side prepared
// statement by a name pgferry reserves for its own.

package classify

import "bytes"

// ReservedPrefix begins the names pgferry gives clients' protocol-level
// prepared statements on shared server connections (the router's
// prepared.NamePrefix, which a test keeps equal: classify imports nothing
// of pgferry's). A statement that names a prepared statement so in SQL
// would run, drop or take one of them (Class.ReservedName).
const ReservedPrefix = "pgferry_"

// reservedName reports whether the identifier r starts with (after blanks
// and comments), as PostgreSQL reads it, begins with ReservedPrefix: an
// unquoted one folded to lower case (only ASCII letters fold, and the
// prefix has no others); a quoted one as written; a Unicode escape one as
// its escapes spell it, or, when pgferry cannot read it (a UESCAPE clause
// it does not read, an escape PostgreSQL refuses), whatever it is: the
// safe side. A name cut to NAMEDATALEN-1 bytes keeps its first eight.
func reservedName(r []byte) bool {
	r = skipSpace(r)
	switch {
	case len(r) > 0 && r[0] == '"':
		// The quote has no '"' in it: a name begins with it exactly when
		// its text between the quotes does, doubled quotes and all.
		return bytes.HasPrefix(r[1:], reservedPrefix)
	case unicodeStart(r, '"'):
		name, _, ok := unicodeIdent(r)
		return !ok || len(name) >= len(ReservedPrefix) && name[:len(ReservedPrefix)] == ReservedPrefix
	}
	return foldedPrefixAt(r, 0)
}

var reservedPrefix = []byte(ReservedPrefix)

// foldedPrefixAt reports whether b[i:], folded as an unquoted identifier
// is, begins with ReservedPrefix.
func foldedPrefixAt(b []byte, i int) bool {
	if i < 0 || len(b)-i < len(ReservedPrefix) {
		return false
	}
	for k := range len(ReservedPrefix) {
		if identLower[b[i+k]] != ReservedPrefix[k] {
			return false
		}
	}
	return true
}

// executesReserved reports whether b holds the word EXECUTE followed by a
// reserved name (reservedName): what EXPLAIN and CREATE TABLE ... AS may
// run. Like the search for session functions it reads the text, not its
// tokens (the safe side): such words in a string or a comment count too.
// A text that cannot hold a reserved name (mayNameReserved), as good as
// every one, costs two vectorised searches; the others a look at each
// byte.
func executesReserved(b []byte) bool {
	if !mayNameReserved(b) {
		return false
	}
	for i := 0; i+len("execute") <= len(b); i++ {
		end := i + len("execute")
		if b[i]|0x20 == 'e' && lowerIs(b[i:end], "execute") && (i == 0 || !identCont(b[i-1])) &&
			(end == len(b) || !identCont(b[end])) && reservedName(b[end:]) {
			return true
		}
	}
	return false
}

// mayNameReserved reports whether b may name a reserved name at all: it
// holds ReservedPrefix in any case of its letters, or a '&', which a
// Unicode escape name needs (U&"\0070gferry_1" holds no prefix).
func mayNameReserved(b []byte) bool {
	if bytes.IndexByte(b, '&') >= 0 {
		return true
	}
	// The prefix ends with its only '_': the search jumps from one '_'
	// to the next and looks at the seven bytes before it.
	const before = len(ReservedPrefix) - 1
	for i := 0; ; i++ {
		j := bytes.IndexByte(b[i:], '_')
		if j < 0 {
			return false
		}
		i += j
		if foldedPrefixAt(b, i-before) {
			return true
		}
	}
}
