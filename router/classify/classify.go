// Package classify reads the first words of SQL text to find what pgferry
// must act on in transaction pooling mode: session state a statement
// creates (SET, RESET, DISCARD, LISTEN, UNLISTEN, and what pins a client),
// and whether a transaction is a plain read that may run on a replica. It
// never parses SQL fully: the rules are in docs/transaction-mode.md, and
// anything it does not recognise is relayed unchanged. It imports nothing
// of pgferry's.
package classify

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strings"
)

// Class is what pgferry must do about one SQL statement before relaying
// it in transaction pooling mode.
type Class struct {
	// pin names session state the statement creates that cannot follow the
	// client to another server connection ("" if none).
	Pin string
	// setName/setValue record `SET name TO value` (session level); reset
	// marks `RESET name`, resetAll `RESET ALL`.
	SetName, SetValue string
	Reset, ResetAll   bool
	// discard marks DISCARD ALL or DEALLOCATE ALL; discardAll DISCARD ALL,
	// which also resets every parameter and ends every LISTEN.
	Discard, DiscardAll bool
	// listen/unlisten name the channel of a LISTEN or UNLISTEN ("*" for
	// UNLISTEN *); unlistenAll marks UNLISTEN *.
	Listen, Unlisten string
	UnlistenAll      bool
}

// ChangesState reports whether pgferry must act when a statement of class c
// runs: a SET or RESET (tracked or not, the caller decides), a discard,
// LISTEN or UNLISTEN.
func (c *Class) ChangesState() bool {
	return c.SetName != "" || c.Reset || c.ResetAll || c.Discard || c.Listen != "" || c.Unlisten != "" || c.UnlistenAll
}

// SQL inspects the statements of a query. The rules are documented
// in docs/transaction-mode.md; anything it does not recognise is relayed
// unchanged. Multi-statement strings are split on semicolons outside quotes.
func SQL(sql []byte) Class {
	c, _ := classifySQL(sql, false)
	if bytes.Contains(sql, backslashQuote) {
		// With standard_conforming_strings off (a tracked parameter a
		// client may set), a backslash escapes a quote in every string,
		// and the statements may split elsewhere. Read both ways, a text
		// whose class differs pins its client: a statement hidden from
		// one reading must not move to another server. (A reading that
		// leaves a string open is not the server's: it would refuse the
		// whole query.)
		if b, open := classifySQL(sql, true); b != c && !open {
			return Class{Pin: pinStringEscapes}
		}
	}
	return c
}

// backslashQuote is what a string reads differently with
// standard_conforming_strings off.
var backslashQuote = []byte(`\'`)

// pinStringEscapes is the pin reason of a text SQL reads two ways.
const pinStringEscapes = "a query that standard_conforming_strings would split differently"

// classifySQL is SQL, reading every string as an escape string when
// backslashes is set; open reports a text that ends inside a string (or
// a comment) so read.
func classifySQL(sql []byte, backslashes bool) (c Class, open bool) {
	// Drivers and pgbench send one statement ended by ';'. When nothing but
	// blanks follows the first ';' and the class does not depend on where
	// the statement ends, the split's scan for quotes can be skipped.
	if semi := bytes.IndexByte(sql, ';'); semi >= 0 && onlyBlanks(sql[semi+1:]) {
		w, rest := nextWord(sql[:semi])
		if endIrrelevant(w) {
			return classifyWord(sql[:semi], w, rest), false
		}
	}
	one, sql, open := splitStatementMode(sql, backslashes)
	if len(skipSpace(sql)) == 0 {
		// One statement, perhaps followed by ';' and blanks or comments:
		// the usual case, whose class the merge below would leave as is.
		return classifyOne(one), open
	}
	out := classifyOne(one) // the first statement's, LISTEN included
	for len(sql) > 0 {
		var o bool
		one, sql, o = splitStatementMode(sql, backslashes)
		open = open || o
		c := classifyOne(one)
		if c.Pin != "" && out.Pin == "" {
			out.Pin = c.Pin
		}
		out.Discard = out.Discard || c.Discard
		out.DiscardAll = out.DiscardAll || c.DiscardAll
		if c.Listen != "" && out.Pin == "" {
			out.Pin = "LISTEN" // only the first statement may LISTEN unpinned
		}
		if c.SetName != "" || c.Reset || c.ResetAll {
			out.SetName, out.SetValue, out.Reset, out.ResetAll = c.SetName, c.SetValue, c.Reset, c.ResetAll
		}
		if len(skipSpace(sql)) == 0 {
			break // nothing but blanks and comments left
		}
	}
	return out, open
}

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

// channelName reads a LISTEN/UNLISTEN channel: an identifier, folded to
// lower case unless double-quoted, as PostgreSQL does.
func channelName(rest []byte) string {
	r := skipSpace(rest)
	if len(r) > 0 && r[0] == '"' {
		var b []byte
		for i := 1; i < len(r); i++ {
			if r[i] == '"' {
				if i+1 < len(r) && r[i+1] == '"' {
					b = append(b, '"')
					i++
					continue
				}
				return string(b)
			}
			b = append(b, r[i])
		}
		return ""
	}
	w, tail := nextWord(r)
	if len(skipSpace(tail)) > 0 {
		return "" // something after the name: not a plain LISTEN
	}
	return w
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

// Needed reports cheaply whether SQL could find anything:
// when it returns false, SQL would return the zero class. It runs
// for every Query and Parse, so it decides on the first word alone when
// the text is one statement (no ';', or one that only blanks follow):
// classifyWord acts on a few first words, and on the others only for an
// advisory lock or a session-level set_config (which need a '(' to be
// called: sessionFunctionPin).
// Anything else (several statements, a ';' in a quote or comment, a first
// word longer than 8 bytes) is classified.
func Needed(sql []byte) bool {
	body := skipSpace(sql) // (a ';' in a leading comment is skipped with it)
	if len(body) == 0 {
		return false
	}
	// stmt is the statement with its leading comments, which the advisory
	// lock check scans too, as SQL does.
	stmt := sql
	if semi := bytes.IndexByte(body, ';'); semi >= 0 {
		if !onlyBlanks(body[semi+1:]) {
			return true
		}
		stmt = sql[:len(sql)-len(body)+semi]
		body = body[:semi]
	}
	switch wordKey(body) {
	case 0, keySet, keyReset, keyDiscard, keyCreate, keyDeclare, keyPrepare, keyListen, keyUnlisten, keyLoad:
		return true
	}
	return sessionFunctionPin(stmt) != ""
}

// wordKey packs the word b starts with, in lower case, into a uint64 (its
// last byte lowest); 0 when b does not start with a word or the word is
// longer than 8 bytes. Words are those of nextWord.
func wordKey(b []byte) uint64 {
	var k uint64
	for i, c := range b {
		l := identLower[c]
		if l == 0 {
			break
		}
		if i == 8 {
			return 0
		}
		k = k<<8 | uint64(l)
	}
	return k
}

// First words Needed tells apart, as constants: a switch on constants is
// a few comparisons (a binary search), one on variables a comparison per
// case, in order.
const (
	keySet      = uint64('s')<<16 | uint64('e')<<8 | uint64('t')
	keyReset    = uint64('r')<<32 | uint64('e')<<24 | uint64('s')<<16 | uint64('e')<<8 | uint64('t')
	keyDiscard  = uint64('d')<<48 | uint64('i')<<40 | uint64('s')<<32 | uint64('c')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('d')
	keyCreate   = uint64('c')<<40 | uint64('r')<<32 | uint64('e')<<24 | uint64('a')<<16 | uint64('t')<<8 | uint64('e')
	keyDeclare  = uint64('d')<<48 | uint64('e')<<40 | uint64('c')<<32 | uint64('l')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('e')
	keyPrepare  = uint64('p')<<48 | uint64('r')<<40 | uint64('e')<<32 | uint64('p')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('e')
	keyListen   = uint64('l')<<40 | uint64('i')<<32 | uint64('s')<<24 | uint64('t')<<16 | uint64('e')<<8 | uint64('n')
	keyUnlisten = uint64('u')<<56 | uint64('n')<<48 | uint64('l')<<40 | uint64('i')<<32 | uint64('s')<<24 | uint64('t')<<16 | uint64('e')<<8 | uint64('n')
	keyLoad     = uint64('l')<<24 | uint64('o')<<16 | uint64('a')<<8 | uint64('d')
)

// onlyBlanks reports whether b holds nothing but white space.
func onlyBlanks(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' {
			return false
		}
	}
	return true
}

// endIrrelevant reports whether classifyOne gives the same class for a
// statement starting with keyword w whether or not it is cut short at a
// ';' that only blanks follow (a ';' that may be inside an unterminated
// quote). That holds for every keyword whose class depends on the first
// word alone, and for the advisory-lock search every other statement gets,
// which cannot match across "; ". The others read the text after the
// keyword.
func endIrrelevant(w string) bool {
	switch w {
	case "set", "reset", "discard", "deallocate", "create", "declare", "listen", "unlisten":
		return false
	}
	return true
}

func classifyOne(stmt []byte) Class {
	w, rest := nextWord(stmt)
	return classifyWord(stmt, w, rest)
}

// classifyWord classifies stmt, whose first word w (lower case) nextWord
// returned with rest.
func classifyWord(stmt []byte, w string, rest []byte) Class {
	var c Class
	switch w {
	case "set":
		c = classifySet(rest)
	case "reset":
		name, r := nextWord(rest)
		switch {
		case name == "all":
			c.ResetAll = true
		case name != "":
			var quoted bool
			if name, _, quoted = dottedName(name, r); quoted {
				c.Pin = pinQuotedName
			} else {
				c.Reset, c.SetName = true, name
			}
		case quotedName(rest):
			c.Pin = pinQuotedName
		}
	case "discard":
		what, _ := nextWord(rest)
		switch what {
		case "all":
			c.Discard, c.DiscardAll, c.ResetAll = true, true, true
		case "temp", "temporary":
		}
	case "deallocate":
		what, r := nextWord(rest)
		if what == "prepare" {
			what, _ = nextWord(r)
		}
		if what == "all" {
			c.Discard = true
		}
	case "create":
		w2, r := nextWord(rest)
		if w2 == "or" { // CREATE OR REPLACE TEMP VIEW
			if w3, r3 := nextWord(r); w3 == "replace" {
				w2, r = nextWord(r3)
			}
		}
		if w2 == "global" || w2 == "local" {
			w2, r = nextWord(r)
		}
		if w2 != "temp" && w2 != "temporary" && bytes.Contains(bytes.ToLower(r), []byte("pg_temp")) {
			c.Pin = "temporary table" // (an object made in the pg_temp schema)
		}
		if w2 == "temp" || w2 == "temporary" {
			low := bytes.ToLower(r)
			if !bytes.Contains(low, []byte("on commit drop")) {
				c.Pin = "temporary table"
			}
		}
	case "declare":
		// DECLARE name [options] CURSOR [WITH HOLD] FOR query: the words
		// before FOR, whatever blanks or comments part them.
		prev := ""
		for b := rest; len(b) > 0; {
			w, r := nextWord(b)
			if w == "" {
				if r = skipSpace(b); len(r) == 0 {
					break
				}
				r = r[1:]
			}
			if w == "for" {
				break
			}
			if prev == "with" && w == "hold" {
				c.Pin = "WITH HOLD cursor"
				break
			}
			prev, b = w, r
		}
	case "prepare":
		c.Pin = "SQL PREPARE"
	case "listen":
		c.Listen = channelName(rest)
		if c.Listen == "" {
			c.Pin = "LISTEN"
		}
	case "unlisten":
		r := skipSpace(rest)
		if len(r) > 0 && r[0] == '*' {
			c.UnlistenAll = true
		} else {
			c.Unlisten = channelName(rest)
		}
	case "load":
		c.Pin = "LOAD"
	}
	if c.Pin == "" && mayCallFunctions(w) && (w != "" || len(skipSpace(stmt)) > 0) {
		// (w is "" for a statement that starts with '(', and for blanks
		// and comments, which are no statement.)
		c.Pin = sessionFunctionPin(stmt)
	}
	return c
}

// mayCallFunctions reports whether a statement that starts with word w
// may call a function: not one whose arguments are names and constants
// only (a SET's value may be a string that names one, and calls nothing).
func mayCallFunctions(w string) bool {
	switch w {
	case "set", "reset", "discard", "deallocate", "listen", "unlisten", "load":
		return false
	}
	return true
}

// Pin reasons of function calls whose effect outlives the transaction.
const (
	pinAdvisoryLock = "session advisory lock"
	pinSetConfig    = "set_config not local to the transaction"
)

// sessionFunctionPin returns the pin reason of a statement that may call a
// function whose effect outlives its transaction, or "": a session
// advisory lock (advisoryLockAt), or set_config whose third
// argument, is_local, is not a literal true (set_config('app.tenant',
// '42', false) is a session's SET, which pgferry does not track).
//
// A call needs a '(' after the name, so a text with no '(' at all, as most
// short queries are, needs no search for the names: one vectorised
// bytes.IndexByte. Both names have a '_', and the search jumps from one
// '_' to the next.
func sessionFunctionPin(stmt []byte) string {
	if bytes.IndexByte(stmt, '(') < 0 {
		return ""
	}
	for i := 0; ; i++ {
		j := bytes.IndexByte(stmt[i:], '_')
		if j < 0 {
			return ""
		}
		i += j
		if advisoryLockAt(stmt, i) {
			return pinAdvisoryLock
		}
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

// quotedName reports whether b (after blanks and comments) starts with a
// quoted identifier: a parameter's name in SET or RESET, which pgferry
// does not track (PostgreSQL takes "search_path" for search_path).
func quotedName(b []byte) bool {
	b = skipSpace(b)
	return len(b) > 0 && b[0] == '"'
}

// dottedName reads the rest of a parameter name that starts with word w,
// before r: the parts of a dotted name (extension parameters such as
// app.tenant). quoted reports a part in double quotes, which it does not
// read.
func dottedName(w string, r []byte) (name string, rest []byte, quoted bool) {
	for len(r) > 0 && r[0] == '.' {
		if quotedName(r[1:]) {
			return w, r, true
		}
		var part string
		part, r = nextWord(r[1:])
		w += "." + part
	}
	return w, r, false
}

// pinQuotedName is the pin reason of a SET or RESET of a parameter named
// in a way pgferry does not track.
const pinQuotedName = "SET or RESET of a quoted parameter name"

// classifySet handles SET [SESSION|LOCAL] name {TO|=} value.
func classifySet(rest []byte) Class {
	var c Class
	w, r := nextWord(rest)
	switch w {
	case "local", "transaction":
		return c
	case "session":
		w2, r2 := nextWord(r)
		if w2 == "characteristics" {
			low := bytes.ToLower(r2)
			switch {
			case bytes.Contains(low, []byte("read only")):
				c.SetName, c.SetValue = "default_transaction_read_only", "on"
			case bytes.Contains(low, []byte("read write")):
				c.SetName, c.SetValue = "default_transaction_read_only", "off"
			default:
				c.Pin = "SET SESSION CHARACTERISTICS"
			}
			return c
		}
		if w2 == "authorization" {
			c.Pin = "SET SESSION AUTHORIZATION"
			return c
		}
		w, r = w2, r2
	case "role":
		c.Pin = "SET ROLE"
		return c
	case "time":
		w2, r2 := nextWord(r)
		if w2 == "zone" {
			w, r = "timezone", r2
			v := strings.TrimSpace(string(skipSpace(r)))
			c.SetName, c.SetValue = w, v
			return c
		}
	}
	if w == "" {
		if quotedName(r) {
			c.Pin = pinQuotedName
		}
		return c
	}
	w, r, quoted := dottedName(w, r)
	if quoted {
		c.Pin = pinQuotedName
		return c
	}
	r = skipSpace(r)
	if len(r) > 0 && r[0] == '=' {
		r = r[1:]
	} else if to, r2 := nextWord(r); to == "to" {
		r = r2
	}
	c.SetName = w
	c.SetValue = strings.TrimSpace(string(skipSpace(r)))
	return c
}
