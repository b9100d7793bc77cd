// This file finds the statements by which a session whose
// default_transaction_read_only is on could write anyway.

package classify

import (
	"bytes"
	"strings"
)

// LiftsReadOnly returns what in sql would let a session that reads by
// default (default_transaction_read_only = on, which pgferry holds for a
// readonly_alias session) run a transaction that writes, or "" when
// nothing does, in any of its statements:
//
//   - BEGIN or START TRANSACTION ... READ WRITE, SET [SESSION | LOCAL]
//     TRANSACTION ... READ WRITE and SET SESSION CHARACTERISTICS AS
//     TRANSACTION ... READ WRITE;
//   - a SET of default_transaction_read_only or transaction_read_only to
//     anything but a literal true (DEFAULT, off, an expression), a RESET
//     of either, RESET ALL and DISCARD ALL (both reset the parameter to
//     the server's default, off unless the role or database sets it);
//   - a SET or RESET of a parameter named in quotes or Unicode escapes,
//     which pgferry does not read, and a set_config not local to its
//     transaction (or one pgferry cannot read) whose text names a
//     read_only parameter, or that is called by a name in Unicode escapes;
//   - a DO block whose text mentions read_only or READ WRITE.
//
// A function the database defines that lifts it is beyond a reading of
// the text. It reads the text as split both with standard_conforming_strings
// on and off (see SQL). It runs only for such sessions: it may allocate.
func LiftsReadOnly(sql []byte) string {
	if what := liftsReadOnly(sql, false); what != "" {
		return what
	}
	if bytes.Contains(sql, backslashQuote) {
		return liftsReadOnly(sql, true)
	}
	return ""
}

func liftsReadOnly(sql []byte, backslashes bool) string {
	for len(skipSpace(sql)) > 0 {
		var one []byte
		one, sql, _ = splitStatementMode(sql, backslashes)
		if what := stmtLiftsReadOnly(one); what != "" {
			return what
		}
	}
	return ""
}

// stmtLiftsReadOnly is LiftsReadOnly for one statement.
func stmtLiftsReadOnly(stmt []byte) string {
	w, rest := nextWord(stmt)
	switch w {
	case "begin":
		if asksReadWrite(rest) {
			return "BEGIN READ WRITE"
		}
	case "start":
		if t, r := nextWord(rest); t == "transaction" && asksReadWrite(r) {
			return "START TRANSACTION READ WRITE"
		}
	case "set":
		if what := setLiftsReadOnly(rest); what != "" {
			return what
		}
	case "reset":
		name, r := nextWord(rest)
		switch {
		case name == "all":
			return "RESET ALL"
		case readOnlyParam(name):
			return "RESET " + name
		case name == "" && quotedName(r), name != "" && unicodeName(name, r):
			return "RESET of a quoted parameter name"
		}
	case "discard":
		if a, _ := nextWord(rest); a == "all" {
			return "DISCARD ALL"
		}
	case "do":
		low := bytes.ToLower(stmt)
		if bytes.Contains(low, []byte("read_only")) || bytes.Contains(low, []byte("read write")) {
			return "a DO block that names a read_only parameter or READ WRITE"
		}
	}
	switch sessionFunctionPin(stmt) {
	case pinSetConfig:
		if bytes.Contains(bytes.ToLower(stmt), []byte("read_only")) {
			return "set_config of a read_only parameter"
		}
	case pinEscapedCall:
		return pinEscapedCall
	}
	return ""
}

// setLiftsReadOnly is stmtLiftsReadOnly for SET, whose rest follows.
func setLiftsReadOnly(rest []byte) string {
	w, r := nextWord(rest)
	switch w {
	case "transaction":
		if asksReadWrite(r) {
			return "SET TRANSACTION READ WRITE"
		}
		return ""
	case "local", "session":
		w2, r2 := nextWord(r)
		switch {
		case w2 == "transaction" && asksReadWrite(r2):
			return "SET TRANSACTION READ WRITE"
		case w == "session" && w2 == "characteristics" && asksReadWrite(r2):
			return "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
		case w2 == "transaction", w2 == "characteristics":
			return ""
		}
		w, r = w2, r2
	}
	if w == "" {
		if quotedName(r) {
			return "SET of a quoted parameter name"
		}
		return ""
	}
	if unicodeName(w, r) {
		return "SET of a quoted parameter name"
	}
	if !readOnlyParam(w) {
		return ""
	}
	r = skipSpace(r)
	if len(r) > 0 && r[0] == '=' {
		r = r[1:]
	} else if to, r2 := nextWord(r); to == "to" {
		r = r2
	}
	if !literalOn(r) {
		return "SET " + w
	}
	return ""
}

// readOnlyParam reports whether name (lower case) is one of the parameters
// that make a transaction read-only.
func readOnlyParam(name string) bool {
	return name == "default_transaction_read_only" || name == "transaction_read_only"
}

// asksReadWrite reports whether the transaction modes in b (after BEGIN,
// START TRANSACTION, SET TRANSACTION or SET SESSION CHARACTERISTICS AS
// TRANSACTION) include READ WRITE.
func asksReadWrite(b []byte) bool {
	prev := ""
	for w, r := nextWord(b); ; w, r = nextWord(r) {
		if w == "" {
			// Not a word: a ',' between modes, or the end.
			r = skipSpace(r)
			if len(r) == 0 || r[0] != ',' {
				return false
			}
			r = r[1:]
			continue
		}
		if prev == "read" && w == "write" {
			return true
		}
		prev = w
	}
}

// literalOn reports whether v, a SET's value (blanks and comments around
// it allowed), is a literal PostgreSQL reads as boolean true, as a word
// or a quoted string.
func literalOn(v []byte) bool {
	v = bytes.TrimRight(skipSpace(v), " \t\n\r\f")
	s := strings.ToLower(string(v))
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		s = s[1 : len(s)-1]
	}
	switch s {
	case "on", "true", "yes", "1", "t", "y":
		return true
	}
	return false
}

// FunctionCallLiftsReadOnly is LiftsReadOnly for a FunctionCall message
// (a function called by its OID): set_config, whose arguments it does not
// read.
func FunctionCallLiftsReadOnly(oid uint32) string {
	if oid == 2078 { // set_config(text, text, boolean), pg_proc.dat
		return "set_config called by the FunctionCall message"
	}
	return ""
}
