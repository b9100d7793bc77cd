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
	"strings"
)

// Class is what pgferry must do about one SQL statement, or a query of
// several, before relaying it in transaction pooling mode.
type Class struct {
	// Pin names session state the statement creates that cannot follow the
	// client to another server connection ("" if none).
	Pin string
	// Change is the statement's change of session state that pgferry
	// carries or applies, if any; for a query of several statements, the
	// first of them, the others following in More.
	Change
	// Discard marks DISCARD ALL or DEALLOCATE ALL; DiscardAll DISCARD ALL,
	// which also resets every parameter and ends every LISTEN.
	Discard, DiscardAll bool
	// Listen names the channel of a LISTEN that pgferry serves: never in a
	// query of several statements (which pins instead).
	Listen string
	// Several marks a query of more than one statement: what it does is
	// the server's to run, whatever pgferry applies of it.
	Several bool
	// ReservedName marks a statement that names a server-side prepared
	// statement by a name beginning with ReservedPrefix, as PostgreSQL
	// reads the name: EXECUTE, EXPLAIN ... EXECUTE, CREATE TABLE ... AS
	// EXECUTE, DEALLOCATE [PREPARE], PREPARE. It would run or drop a
	// statement pgferry prepared on the server for whichever client, or
	// take a name pgferry may want there; the router refuses it.
	ReservedName bool
	// Deallocate names the prepared statement a DEALLOCATE [PREPARE] of
	// one name drops (not ALL, not a reserved name), as PostgreSQL reads
	// the name (channelName; "" for one pgferry cannot read): the router
	// drops the client's protocol-level statement of that name, if it has
	// one, rather than let the server look for it under the name the
	// client gave it. Never in a query of several statements.
	Deallocate string
	// PrepareTransaction marks PREPARE TRANSACTION 'gid', which ends the
	// transaction and leaves the session nothing to pin it (not a PREPARE
	// of a statement named transaction: prepareTransaction).
	PrepareTransaction bool
	// More holds the changes of a query of several statements after the
	// first (Change), in the order they run; nil otherwise, so that a
	// single statement costs no allocation.
	More []Change
}

// Change is one statement's change of session state that pgferry
// carries (SET and RESET) or applies itself (UNLISTEN).
type Change struct {
	// SetName and SetValue record `SET name TO value` (session level, as
	// written); Reset marks `RESET name` (SetName), ResetAll `RESET ALL`
	// (or DISCARD ALL).
	SetName, SetValue string
	Reset, ResetAll   bool
	// Unlisten names the channel of an UNLISTEN; UnlistenAll marks
	// UNLISTEN *.
	Unlisten    string
	UnlistenAll bool
	// Savepoint marks SAVEPOINT (SavepointDefine), RELEASE [SAVEPOINT]
	// (SavepointRelease) or ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT]
	// (SavepointRollback) of the savepoint SavepointName, read as
	// PostgreSQL reads a name: folded to lower case unless quoted, its
	// Unicode escapes decoded ("" for one pgferry cannot read). pgferry
	// follows them only for a client whose SETs wait for their
	// transaction's end: they decide which of those SETs last.
	Savepoint     uint8
	SavepointName string
	// Stmt is the statement's place in its query: 0 for the first of the
	// statements PostgreSQL runs (blanks and comments between two ';' are
	// none), each of which it answers with one CommandComplete or an
	// error.
	Stmt int
}

// Savepoint statements (Change.Savepoint).
const (
	SavepointDefine uint8 = 1 + iota
	SavepointRelease
	SavepointRollback
)

// Sets reports whether ch SETs or RESETs a parameter (tracked or not,
// the caller decides).
func (ch *Change) Sets() bool { return ch.SetName != "" || ch.Reset || ch.ResetAll }

// acts reports whether ch changes session state whatever the client did
// before: a SET, RESET or UNLISTEN (not a savepoint statement).
func (ch *Change) acts() bool { return ch.Sets() || ch.Unlisten != "" || ch.UnlistenAll }

// Changes reports how many changes c holds: Change and then More. (Its
// Change is the zero Change exactly when it holds none.)
func (c *Class) Changes() int {
	if c.Change == (Change{}) {
		return 0
	}
	return 1 + len(c.More)
}

// ChangeAt returns change i of c's Changes.
func (c *Class) ChangeAt(i int) *Change {
	if i == 0 {
		return &c.Change
	}
	return &c.More[i-1]
}

// ChangesState reports whether pgferry must act when a statement of class c
// runs, whatever the client did before: a SET or RESET (tracked or not,
// the caller decides), a discard, LISTEN or UNLISTEN. A savepoint
// statement alone matters only to a client with SETs pending, which looks
// at it when it is bound (see Savepoint).
func (c *Class) ChangesState() bool {
	return c.Change.acts() || len(c.More) > 0 || c.Discard || c.Listen != "" || c.Deallocate != ""
}

// equal reports whether c and o are the same class.
func (c *Class) equal(o *Class) bool {
	if c.Pin != o.Pin || c.Change != o.Change || c.Discard != o.Discard || c.DiscardAll != o.DiscardAll ||
		c.Listen != o.Listen || c.Several != o.Several || c.ReservedName != o.ReservedName || c.Deallocate != o.Deallocate || len(c.More) != len(o.More) {
		return false
	}
	for i := range c.More {
		if c.More[i] != o.More[i] {
			return false
		}
	}
	return true
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
		// whole query.) A reserved name either reading sees is reported:
		// the server's reading may be that one.
		if b, open := classifySQL(sql, true); !b.equal(&c) && !open {
			return Class{Pin: pinStringEscapes, ReservedName: c.ReservedName || b.ReservedName}
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
	// Several statements: each one's class merges into out, its change of
	// state, if any, in order, with its place in the query (Change.Stmt):
	// a COMMIT, ROLLBACK or savepoint statement among them keeps or undoes
	// the SETs before it and not those after, and pgferry follows which
	// by the statements' CommandCompletes.
	out := Class{Several: true}
	stmt := 0
	uncounted := false // a statement before may count as more than one
	for {
		w, rest := nextWord(one)
		c := classifyWord(one, w, rest)
		if c.Change != (Change{}) {
			c.Stmt = stmt
			if uncounted && (c.Change.Sets() || c.Change.Savepoint != 0) && c.Pin == "" {
				c.Pin = pinUncounted
			}
		}
		uncounted = uncounted || splitInside(w, one)
		if w != "" || len(skipSpace(one)) > 0 {
			stmt++ // (blanks and comments are no statement)
		}
		if c.Pin != "" && out.Pin == "" {
			out.Pin = c.Pin
		}
		out.Discard = out.Discard || c.Discard
		out.DiscardAll = out.DiscardAll || c.DiscardAll
		out.ReservedName = out.ReservedName || c.ReservedName
		if c.Listen != "" && out.Pin == "" {
			// pgferry answers a LISTEN itself only when it is the whole
			// query: the server runs this one, with the rest.
			out.Pin = pinListenInSeveral
		}
		switch {
		case c.Change == (Change{}):
		case out.Change == (Change{}):
			out.Change = c.Change
		default:
			out.More = append(out.More, c.Change)
		}
		if len(skipSpace(sql)) == 0 {
			break // nothing but blanks and comments left
		}
		var o bool
		one, sql, o = splitStatementMode(sql, backslashes)
		open = open || o
	}
	return out, open
}

// splitInside reports whether stmt, a piece of a query of several split
// at a ';', whose first word is w, may end inside a statement PostgreSQL
// reads as one: it opens more parentheses than it closes (a CREATE RULE
// of several actions, "DO ALSO (...; ...)"), or it begins a function body
// of several statements (CREATE FUNCTION or PROCEDURE ... BEGIN ATOMIC
// ...; ...; END). The pieces after it then count more statements than the
// server answers. It errs on the side of yes: parentheses and ATOMIC in
// strings and comments count.
func splitInside(w string, stmt []byte) bool {
	if bytes.Count(stmt, []byte("(")) > bytes.Count(stmt, []byte(")")) {
		return true
	}
	return w == "create" && bytes.Contains(bytes.ToLower(stmt), []byte("atomic"))
}

// pinUncounted is the pin reason of a SET, RESET or savepoint statement
// in a query of several after a statement that splitInside says may count
// as more than one: pgferry would settle it by the wrong statement's
// answer (a ROLLBACK's, taking it for one that ran before).
const pinUncounted = "SET or RESET in a query of several statements after one pgferry cannot count (a rule of several actions, a BEGIN ATOMIC body)"

// Needed reports cheaply whether SQL could find anything:
// when it returns false, SQL would return the zero class. It runs
// for every Query and Parse, so it decides on the first word alone when
// the text is one statement (no ';', or one that only blanks follow):
// classifyWord acts on a few first words, and on the others only for an
// advisory lock or a session-level set_config (which need a '(' to be
// called: sessionFunctionPin), or, after EXECUTE and EXPLAIN, for a name
// pgferry reserves (which needs the prefix, or a '&': mayNameReserved).
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
		return true // (DEALLOCATE, longer than 8 bytes, is key 0)
	case keyExecute, keyExplain:
		if mayNameReserved(body) {
			return true
		}
	}
	return sessionFunctionPin(stmt) != ""
}

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
// which cannot match across "; "; and for the reserved names after
// EXECUTE, EXPLAIN and PREPARE, which such a ';' can only be inside of if
// the name is left open, and which then read the same (unreadable) both
// ways. The others read the text after the keyword.
func endIrrelevant(w string) bool {
	switch w {
	case "set", "reset", "discard", "deallocate", "create", "declare", "listen", "unlisten",
		"savepoint", "release", "rollback":
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
		// DEALLOCATE [PREPARE] name | ALL ("prepare" may be the name).
		what, r := nextWord(rest)
		c.ReservedName = reservedName(rest)
		name := rest
		if what == "prepare" {
			c.ReservedName = c.ReservedName || reservedName(r)
			if len(skipSpace(r)) > 0 {
				name = r
			}
			what, _ = nextWord(r)
		}
		switch {
		case what == "all":
			c.Discard = true
		case !c.ReservedName:
			c.Deallocate = channelName(name)
		}
	case "execute":
		c.ReservedName = reservedName(rest)
	case "explain":
		// EXPLAIN [options] EXECUTE name, or CREATE TABLE ... AS EXECUTE.
		c.ReservedName = executesReserved(rest)
	case "create":
		c.ReservedName = executesReserved(rest) // CREATE TABLE ... AS EXECUTE name
		w2, r := nextWord(rest)
		if w2 == "or" { // CREATE OR REPLACE TEMP VIEW
			if w3, r3 := nextWord(r); w3 == "replace" {
				w2, r = nextWord(r3)
			}
		}
		if w2 == "global" || w2 == "local" {
			w2, r = nextWord(r)
		}
		if w2 != "temp" && w2 != "temporary" && (bytes.Contains(bytes.ToLower(r), []byte("pg_temp")) || escapedNameBefore(r, '.')) {
			// An object made in the pg_temp schema, or in one named with
			// Unicode escapes, which may spell pg_temp.
			c.Pin = "temporary table"
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
		if prepareTransaction(rest) {
			c.PrepareTransaction = true
			break
		}
		c.Pin = "SQL PREPARE"
		c.ReservedName = reservedName(rest)
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
	case "savepoint":
		c.Savepoint, c.SavepointName = SavepointDefine, channelName(rest)
	case "release":
		c.Savepoint, c.SavepointName = SavepointRelease, savepointName(rest)
	case "rollback":
		if r, ok := rollbackTo(rest); ok {
			c.Savepoint, c.SavepointName = SavepointRollback, savepointName(r)
		}
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

// quotedName reports whether b (after blanks and comments) starts with a
// quoted identifier: a parameter's name in SET or RESET, which pgferry
// does not track (PostgreSQL takes "search_path" for search_path).
func quotedName(b []byte) bool {
	b = skipSpace(b)
	return len(b) > 0 && b[0] == '"'
}

// dottedName reads the rest of a parameter name that starts with word w,
// before r: the parts of a dotted name (extension parameters such as
// app.tenant), with any blanks and comments around their dots (PostgreSQL
// reads them as tokens). quoted reports a part in double quotes or in
// Unicode escapes (U&"search\005fpath" is search_path), which it does not
// read.
func dottedName(w string, r []byte) (name string, rest []byte, quoted bool) {
	for part := w; ; {
		if unicodeName(part, r) {
			return w, r, true
		}
		dot := skipSpace(r)
		if len(dot) == 0 || dot[0] != '.' {
			return w, r, false
		}
		if quotedName(dot[1:]) {
			return w, r, true
		}
		part, r = nextWord(dot[1:])
		w += "." + part
	}
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
