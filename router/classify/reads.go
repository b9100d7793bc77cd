// Read routing: whether a transaction is a read that may run on a replica.

package classify

import "bytes"

// BeginsReadOnly reports BEGIN or START TRANSACTION with READ ONLY among
// its modes (any isolation level), and not READ WRITE. It reads the words
// of the statement as PostgreSQL's lexer does, up to its end: comments are
// blanks, and a statement with a quote, a quoted identifier or anything
// else a transaction mode does not hold is not one (the server refuses
// it), so READ ONLY in a comment or a name does not count. It does not
// allocate.
func BeginsReadOnly(sql []byte) bool {
	w, rest := token(sql)
	switch {
	case bytes.EqualFold(w, []byte("begin")):
		if w, r := token(rest); bytes.EqualFold(w, []byte("work")) || bytes.EqualFold(w, []byte("transaction")) {
			rest = r
		}
	case bytes.EqualFold(w, []byte("start")):
		if w, rest = token(rest); !bytes.EqualFold(w, []byte("transaction")) {
			return false
		}
	default:
		return false
	}
	readOnly, readWrite := false, false
	var prev []byte
	for {
		w, rest = token(rest)
		switch {
		case len(w) == 0 || w[0] == ';':
			return readOnly && !readWrite
		case w[0] == ',':
		case identLower[w[0]] == 0:
			return false // a quote, a quoted identifier, ...: no mode
		case bytes.EqualFold(prev, []byte("read")) && bytes.EqualFold(w, []byte("only")):
			readOnly = true
		case bytes.EqualFold(prev, []byte("read")) && bytes.EqualFold(w, []byte("write")):
			readWrite = true
		}
		prev = w
	}
}

// token skips blanks and comments and returns the next word (letters,
// digits and underscores, as written) or the one byte of anything else,
// and what follows; the token is empty at the end of b, or in a comment
// that does not end.
func token(b []byte) (tok, rest []byte) {
	b = skipSpace(b)
	i := 0
	for i < len(b) && identLower[b[i]] != 0 {
		i++
	}
	if i == 0 && len(b) > 0 {
		i = 1
	}
	return b[:i], b[i:]
}

// writingFunctions may write or depend on session state; a statement
// calling one is never routed to a replica.
var writingFunctions = [][]byte{
	[]byte("nextval"), []byte("setval"), []byte("currval"), []byte("lastval"),
	[]byte("advisory"), []byte("lo_"), []byte("txid_current"), []byte("pg_current_xact_id"),
	[]byte("pg_notify"), []byte("set_config"), []byte("dblink"), []byte("pg_terminate_backend"),
	[]byte("pg_cancel_backend"), []byte("pg_reload_conf"), []byte("pg_switch_wal"),
	[]byte("replication_slot"), []byte("pg_create"), []byte("pg_drop"),
}

// writingKeywords in any position make a statement uncertain.
var writingKeywords = []string{"insert", "update", "delete", "merge", "into", "for", "lock", "call", "do", "copy"}

// IsPlainRead is the route_read_statements rule: exactly one statement,
// starting with SELECT, or WITH ... SELECT; no INSERT/UPDATE/DELETE/MERGE,
// SELECT INTO, FOR UPDATE/SHARE (any locking clause), LOCK, CALL, DO or
// COPY keyword anywhere; and no call of a function known to write or to
// read session state (writingFunctions), nor of one named with Unicode
// escapes pgferry does not decode. Anything else goes to the
// primary. Function calls not on the list are assumed to be reads: mark
// writing transactions explicitly or keep route_read_statements off.
func IsPlainRead(sql []byte) bool {
	if bytes.Contains(sql, backslashQuote) {
		return false // (its keyword scan reads plain quotes only)
	}
	stmt, rest := splitStatement(sql)
	if len(skipSpace(rest)) > 0 {
		return false
	}
	w, _ := nextWord(stmt)
	if w != "select" && w != "with" {
		return false
	}
	low := bytes.ToLower(stmt)
	for _, f := range writingFunctions {
		if bytes.Contains(low, f) {
			return false
		}
	}
	if escapedNameBefore(stmt, '(') {
		return false // a function whose name the list cannot match
	}
	// Scan the words outside quotes for writing keywords.
	b := low
	for len(b) > 0 {
		b = skipSpace(b)
		if len(b) == 0 {
			break
		}
		switch b[0] {
		case '\'', '"':
			j := bytes.IndexByte(b[1:], b[0])
			if j < 0 {
				return false
			}
			b = b[j+2:]
			continue
		}
		word, r := nextWord(b)
		if word == "" {
			b = b[1:]
			continue
		}
		for _, k := range writingKeywords {
			if word == k {
				return false
			}
		}
		b = r
	}
	return true
}
