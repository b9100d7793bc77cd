// This file splits SQL text into statements and words: quotes, dollar
// quotes, comments and escape strings, as PostgreSQL's lexer reads them.

package classify

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strings"
)

// splitStatement returns the first statement and the rest, splitting at a
// semicolon outside quotes, dollar quotes and comments.
//
// It runs for every Query, so rather than walk the text byte by byte it
// finds the next ';' with bytes.IndexByte (vectorised) and the next byte
// that may open a quote or comment with indexQuoteStart, and parses only
// from there. Most queries have neither before their first ';'.
func splitStatement(sql []byte) (stmt, rest []byte) {
	stmt, rest, _ = splitStatementMode(sql, false)
	return stmt, rest
}

// splitStatementMode is splitStatement, reading every string as an
// escape string when backslashes is set (standard_conforming_strings off);
// open reports that the text ends inside a quote, dollar quote or comment
// it opened (PostgreSQL refuses the whole query then).
func splitStatementMode(sql []byte, backslashes bool) (stmt, rest []byte, open bool) {
	i := 0     // sql[:i] is parsed; i is outside quotes and comments
	semi := -1 // the first ';' at or after i, once known
	for {
		if semi < i {
			j := bytes.IndexByte(sql[i:], ';')
			switch {
			case j >= 0:
				semi = i + j
			case !backslashes:
				// Nothing left can end the statement, whatever the quoting.
				return sql, nil, false
			default:
				// Read on to the end: the reading of a text that ends
				// inside a string is one the server refuses (see SQL).
				semi = len(sql)
			}
		}
		j := indexQuoteStart(sql[i:semi])
		if j < 0 {
			if semi == len(sql) {
				return sql, nil, false
			}
			return sql[:semi], sql[semi+1:], false
		}
		i += j
		switch c := sql[i]; c {
		case '\'', '"':
			if c == '\'' && (backslashes || escapeString(sql, i)) {
				j := escapeStringEnd(sql[i+1:])
				if j < 0 {
					return sql, nil, true
				}
				i += j + 1
				continue
			}
			j := bytes.IndexByte(sql[i+1:], c)
			if j < 0 {
				return sql, nil, true
			}
			i += j + 2
			continue
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				j := lineEnd(sql[i:])
				if j < 0 {
					return sql, nil, false // (a comment may end the text)
				}
				i += j + 1
				continue
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				j := blockCommentEnd(sql[i+2:])
				if j < 0 {
					return sql, nil, true
				}
				i += j + 2
				continue
			}
		case '$':
			// $tag$ ... $tag$
			j := bytes.IndexByte(sql[i+1:], '$')
			if j >= 0 && dollarTag(sql[i+1:i+1+j]) && !inIdentifier(sql, i) {
				tag := sql[i : i+j+2]
				k := bytes.Index(sql[i+len(tag):], tag)
				if k < 0 {
					return sql, nil, true
				}
				i += len(tag) + k + len(tag)
				continue
			}
		}
		i++ // a '-', '/' or '$' that opens nothing
	}
}

// indexQuoteStart returns the index of the first byte of b that may open a
// quote, comment or dollar quote (' " - / $), or -1.
//
// All five are bytes 0x2X, as few other bytes of SQL text are (the space
// is 0x20, letters and digits are above), so it tests 8 bytes at a time
// for 0x21-0x2F with bit arithmetic and looks only at those few bytes.
func indexQuoteStart(b []byte) int {
	i := 0
	for ; len(b)-i >= 8; i += 8 {
		for m := bytes2x(binary.LittleEndian.Uint64(b[i:])); m != 0; m &= m - 1 {
			if j := i + bits.TrailingZeros64(m)/8; quoteStart[b[j]] {
				return j
			}
		}
	}
	for j, c := range b[i:] {
		if quoteStart[c] {
			return i + j
		}
	}
	return -1
}

// bytes2x sets the high bit of each byte of x that is 0x21-0x2F and clears
// all other bits ("hasbetween" from Bit Twiddling Hacks: working on the
// low 7 bits of each byte, no carry or borrow crosses bytes).
func bytes2x(x uint64) uint64 {
	const ones = 0x0101010101010101
	low := x & (ones * 0x7f)
	return (ones*(127+0x30) - low) & ^x & (low + ones*(127-0x20)) & (ones * 0x80)
}

// quoteStart marks the bytes that may open a quote, comment or dollar quote.
var quoteStart = [256]bool{'\'': true, '"': true, '-': true, '/': true, '$': true}

// channelName reads a LISTEN/UNLISTEN channel as PostgreSQL does: an
// identifier, folded to lower case unless quoted, its Unicode escapes
// decoded (U&"..."), cut to NAMEDATALEN-1 bytes. It returns "" for a name
// it cannot read so (an invalid escape, something after the name): the
// callers leave such a statement to the server, which refuses what is
// invalid.
func channelName(rest []byte) string {
	r := skipSpace(rest)
	var name string
	switch {
	case len(r) > 0 && r[0] == '"':
		b, tail, ok := quotedIdent(r)
		if !ok {
			return ""
		}
		name, r = string(b), tail
	case unicodeStart(r, '"'):
		n, tail, ok := unicodeIdent(r)
		if !ok {
			return ""
		}
		name, r = n, tail
	default:
		name, r = nextWord(r)
	}
	if len(skipSpace(r)) > 0 {
		return "" // something after the name: not a plain LISTEN
	}
	return truncateName(name)
}

// unicodeName reports whether word w, which nextWord returned with r,
// opens a Unicode escape identifier, U&"...": PostgreSQL's xuistart, the
// U, the '&' and the quote with nothing between them.
func unicodeName(w string, r []byte) bool {
	return w == "u" && len(r) > 1 && r[0] == '&' && r[1] == '"'
}

// escapedNameBefore reports whether stmt holds a Unicode escape identifier
// whose name pgferry cannot read and that byte c follows (after blanks and
// comments): U&"..." with a backslash in it (an escape by default), or
// one with a UESCAPE clause, whatever follows it. PostgreSQL reads such an
// identifier as the name its escapes spell (U&"set\005fconfig" is
// set_config); pgferry does not decode them. Without either it reads as
// written, as a plain quoted name does, and the callers' searches for
// names see it.
//
// Like those searches it reads the text, not its tokens: such a name
// inside a string or a comment counts too (the safe side). So may a U&"
// there open a name that runs to the opening quote of a real one: when a
// candidate is not such a name, the search goes on just past its U&", not
// past its end, so that a real name after it is still looked at.
// Statements rarely hold a '&', and the search jumps from one to the next.
func escapedNameBefore(stmt []byte, c byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(stmt[i:], '&')
		if j < 0 {
			return false
		}
		i += j + 1 // just past the '&'
		if i < 2 || stmt[i-2]|0x20 != 'u' || i == len(stmt) || stmt[i] != '"' {
			continue
		}
		// The name runs to the quote that ends it ("" is a quote in it).
		open := i
		escaped := false
		for i++; ; {
			q := bytes.IndexByte(stmt[i:], '"')
			if q < 0 {
				return false // an identifier left open: PostgreSQL refuses it
			}
			escaped = escaped || bytes.IndexByte(stmt[i:i+q], '\\') >= 0
			i += q + 1
			if i == len(stmt) || stmt[i] != '"' {
				break
			}
			i++
		}
		r := skipSpace(stmt[i:])
		if len(r) >= 7 && lowerIs(r[:7], "uescape") && (len(r) == 7 || !identCont(r[7])) {
			return true // its escape character: which, pgferry does not read
		}
		if escaped && len(r) > 0 && r[0] == c {
			return true
		}
		i = open + 1
	}
}

// nextWord skips blanks and comments and returns the next word in lower
// case (ASCII only; SQL keywords are ASCII) and the rest.
func nextWord(b []byte) (word string, rest []byte) {
	b = skipSpace(b)
	var lb lowerBuf
	i := 0
	for ; i < len(b); i++ {
		l := identLower[b[i]]
		if l == 0 {
			break
		}
		if i < len(lb) {
			lb[i] = l
		}
	}
	if i == 0 {
		return "", b
	}
	if i <= len(lb) {
		// Known keywords come back without allocating.
		if kw := lookupKeyword(lb[:i]); kw != "" {
			return kw, b[i:]
		}
		return string(lb[:i]), b[i:]
	}
	return strings.ToLower(string(b[:i])), b[i:]
}

type lowerBuf [16]byte

// identLower maps the bytes of an identifier ([A-Za-z0-9_]) to lower case,
// and every other byte to 0.
var identLower = func() (t [256]byte) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= 'A' && c <= 'Z':
			t[c] = byte(c) | 0x20
		case c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			t[c] = byte(c)
		}
	}
	return t
}()

// keywords are the words classification and routing compare against;
// nextWord returns these interned, so the hot path does not allocate.
var keywords = []string{
	"select", "with", "values", "call", "do", "set", "reset", "discard", "deallocate", "create",
	"declare", "prepare", "listen", "unlisten", "load", "begin", "start", "transaction", "local",
	"session", "characteristics", "authorization", "role", "time", "zone", "to", "all", "temp",
	"temporary", "global", "insert", "update", "delete", "merge", "into", "for", "lock", "copy",
	"read", "only", "write", "from", "where", "and", "or", "not", "as", "on", "table", "commit",
	"rollback", "end", "abort", "savepoint", "release", "show", "explain", "analyze", "true", "false",
	"search_path", "timezone", "application_name", "datestyle", "intervalstyle", "client_encoding",
	"statement_timeout", "work_mem", "default_transaction_read_only",
}

// keywordTable holds the keywords in an open-addressing hash table (linear
// probing, well under half full). nextWord looks up every first word of
// every query: this costs a fraction of a map lookup (no hashing of the
// whole word, no runtime call).
var keywordTable = func() (t [256]string) {
	for _, w := range keywords {
		h := keywordHash([]byte(w))
		for t[h] != "" {
			h++
		}
		t[h] = w
	}
	return t
}()

func keywordHash(w []byte) uint8 {
	return uint8(uint(w[0])*31 + uint(w[len(w)-1])*7 + uint(len(w)))
}

// lookupKeyword returns the interned keyword equal to w (non-empty, lower
// case), or "".
func lookupKeyword(w []byte) string {
	for h := keywordHash(w); ; h++ {
		kw := keywordTable[h]
		if kw == "" || kw == string(w) {
			return kw
		}
	}
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 {
		if b[0] > '/' {
			return b // not a blank nor a comment start: the usual case
		}
		switch {
		case b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r' || b[0] == '\f':
			b = b[1:]
		case len(b) > 1 && b[0] == '-' && b[1] == '-':
			i := lineEnd(b)
			if i < 0 {
				return nil
			}
			b = b[i+1:]
		case len(b) > 1 && b[0] == '/' && b[1] == '*':
			i := blockCommentEnd(b[2:])
			if i < 0 {
				return nil
			}
			b = b[i+2:]
		default:
			return b
		}
	}
	return b
}

// dollarTag reports whether b can be a dollar quote's tag (PostgreSQL's
// dolq_start and dolq_cont): empty, or a letter, '_' or a byte from 0x80
// followed by those and digits.
func dollarTag(b []byte) bool {
	for k, c := range b {
		if !identCont(c) || c == '$' || (k == 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// inIdentifier reports whether sql[i] continues an identifier: in
// "a$b$" the '$'s are the identifier's, not a dollar quote's (a number
// before a '$' ends there).
func inIdentifier(sql []byte, i int) bool {
	k := i
	for k > 0 && identCont(sql[k-1]) {
		k--
	}
	for ; k < i; k++ {
		if sql[k] < '0' || sql[k] > '9' {
			return true // a letter, '_', '$' or byte from 0x80 in the run
		}
	}
	return false
}

// escapeString reports whether the quote at sql[i] opens an escape
// string constant (E'...'): an E or e right before it that starts a
// token. In one, a backslash escapes the next byte, a quote included.
func escapeString(sql []byte, i int) bool {
	return i > 0 && sql[i-1]|0x20 == 'e' && (i == 1 || !identCont(sql[i-2]))
}

// identCont reports whether c may continue an identifier (PostgreSQL's
// ident_cont: letters, digits, '_', '$' and every byte from 0x80).
func identCont(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// escapeStringEnd returns how far into b, which follows an escape
// string's opening quote, the string ends (just past its closing quote),
// or -1 if it does not.
func escapeStringEnd(b []byte) int {
	for k := 0; k < len(b); k++ {
		switch b[k] {
		case '\\':
			k++ // the escaped byte
		case '\'':
			if k+1 < len(b) && b[k+1] == '\'' {
				k++ // a doubled quote
				continue
			}
			if n := quoteContinues(b[k+1:]); n >= 0 {
				k += 1 + n // the next piece's quote: the string goes on
				continue
			}
			return k + 1
		}
	}
	return -1
}

// quoteContinues returns where in b, which follows a string's closing
// quote, a piece that continues the string opens, or -1: PostgreSQL's
// quotecontinue, blanks and "--" comments with a newline among them
// before the quote (the first newline may follow only horizontal blanks
// and comments). An escape string's next piece takes backslash escapes
// too.
func quoteContinues(b []byte) int {
	i, newline := 0, false
	for i < len(b) {
		switch c := b[i]; {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case c == ' ' || c == '\t' || c == '\f':
			i++
		case c == '-' && i+1 < len(b) && b[i+1] == '-':
			j := lineEnd(b[i:])
			if j < 0 {
				return -1
			}
			i += j // (the newline itself next)
		case c == '\'' && newline:
			return i
		default:
			return -1
		}
	}
	return -1
}

// lineEnd returns where the line b starts ends (its newline: PostgreSQL
// takes a carriage return for one too), or -1.
func lineEnd(b []byte) int { return bytes.IndexAny(b, "\n\r") }

// blockCommentEnd returns how far into b, which follows a "/*", the
// comment ends (just past its "*/"), or -1 if it does not. Block comments
// nest in PostgreSQL: "/* a /* b */ c */" is one comment, and a statement
// after it must not be taken for part of it.
func blockCommentEnd(b []byte) int {
	end := bytes.Index(b, []byte("*/"))
	if end < 0 {
		return -1
	}
	if !bytes.Contains(b[:end+1], []byte("/*")) { // (a "/*" may end on its "*")
		return end + 2 // the usual case: nothing nested
	}
	depth := 1
	for i := 0; i+1 < len(b); i++ {
		switch {
		case b[i] == '/' && b[i+1] == '*':
			depth++
			i++
		case b[i] == '*' && b[i+1] == '/':
			if depth--; depth == 0 {
				return i + 2
			}
			i++
		}
	}
	return -1
}

// ParamCount returns the highest parameter number ($n) that sql, one
// statement's text, refers to outside quotes, quoted identifiers, dollar
// quotes and comments: how many parameters PostgreSQL counts for a Parse
// that declares fewer types (parse_param.c, variable_paramref_hook). Its
// strings are read as standard_conforming_strings = on reads them (an E'...'
// string escapes with backslashes).
func ParamCount(sql []byte) int {
	n := 0
	for i := 0; i < len(sql); {
		j := indexQuoteStart(sql[i:])
		if j < 0 {
			return n
		}
		i += j
		switch c := sql[i]; c {
		case '\'', '"':
			var k int
			if c == '\'' && escapeString(sql, i) {
				k = escapeStringEnd(sql[i+1:])
			} else if k = bytes.IndexByte(sql[i+1:], c); k >= 0 {
				k++
			}
			if k < 0 {
				return n
			}
			i += k + 1
			continue
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				k := lineEnd(sql[i:])
				if k < 0 {
					return n
				}
				i += k + 1
				continue
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				k := blockCommentEnd(sql[i+2:])
				if k < 0 {
					return n
				}
				i += k + 2
				continue
			}
		case '$':
			if inIdentifier(sql, i) {
				break
			}
			if k := i + 1; k < len(sql) && sql[k] >= '0' && sql[k] <= '9' {
				v := 0
				for ; k < len(sql) && sql[k] >= '0' && sql[k] <= '9'; k++ {
					if v < 1<<16 {
						v = v*10 + int(sql[k]-'0')
					}
				}
				n = max(n, v)
				i = k
				continue
			}
			k := bytes.IndexByte(sql[i+1:], '$')
			if k >= 0 && dollarTag(sql[i+1:i+1+k]) {
				tag := sql[i : i+k+2]
				e := bytes.Index(sql[i+len(tag):], tag)
				if e < 0 {
					return n
				}
				i += len(tag) + e + len(tag)
				continue
			}
		}
		i++
	}
	return n
}
