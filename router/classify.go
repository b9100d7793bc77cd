package router

import (
	"bytes"
	"strings"
)

// stmtClass is what pgferry must do about one SQL statement before relaying
// it in transaction pooling mode.
type stmtClass struct {
	// pin names session state the statement creates that cannot follow the
	// client to another server connection ("" if none).
	pin string
	// setName/setValue record `SET name TO value` (session level); reset
	// marks `RESET name`, resetAll `RESET ALL`.
	setName, setValue string
	reset, resetAll   bool
	// discard marks DISCARD ALL or DEALLOCATE ALL.
	discard bool
	// listen/unlisten name the channel of a LISTEN or UNLISTEN ("*" for
	// UNLISTEN *); unlistenAll marks UNLISTEN *.
	listen, unlisten string
	unlistenAll      bool
}

// classifySQL inspects the statements of a query. The rules are documented
// in docs/transaction-mode.md; anything it does not recognise is relayed
// unchanged. Multi-statement strings are split on semicolons outside quotes.
func classifySQL(sql []byte) stmtClass {
	var out stmtClass
	n := 0
	for len(sql) > 0 {
		var one []byte
		one, sql = splitStatement(sql)
		c := classifyOne(one)
		n++
		if c.pin != "" && out.pin == "" {
			out.pin = c.pin
		}
		if c.discard {
			out.discard = true
		}
		if n == 1 {
			out.listen, out.unlisten, out.unlistenAll = c.listen, c.unlisten, c.unlistenAll
		} else if c.listen != "" && out.pin == "" {
			out.pin = "LISTEN"
		}
		if c.setName != "" || c.reset || c.resetAll {
			out.setName, out.setValue, out.reset, out.resetAll = c.setName, c.setValue, c.reset, c.resetAll
		}
	}
	return out
}

// splitStatement returns the first statement and the rest, splitting at a
// semicolon outside quotes, dollar quotes and comments.
func splitStatement(sql []byte) (stmt, rest []byte) {
	i := 0
	for i < len(sql) {
		switch c := sql[i]; c {
		case ';':
			return sql[:i], sql[i+1:]
		case '\'', '"':
			j := bytes.IndexByte(sql[i+1:], c)
			if j < 0 {
				return sql, nil
			}
			i += j + 2
			continue
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				j := bytes.IndexByte(sql[i:], '\n')
				if j < 0 {
					return sql, nil
				}
				i += j + 1
				continue
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				j := bytes.Index(sql[i+2:], []byte("*/"))
				if j < 0 {
					return sql, nil
				}
				i += j + 4
				continue
			}
		case '$':
			// $tag$ ... $tag$
			j := bytes.IndexByte(sql[i+1:], '$')
			if j >= 0 && isIdent(sql[i+1:i+1+j]) {
				tag := sql[i : i+j+2]
				k := bytes.Index(sql[i+len(tag):], tag)
				if k < 0 {
					return sql, nil
				}
				i += len(tag) + k + len(tag)
				continue
			}
		}
		i++
	}
	return sql, nil
}

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

func isIdent(b []byte) bool {
	for _, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// nextWord skips blanks and comments and returns the next word in lower
// case (ASCII only; SQL keywords are ASCII) and the rest.
func nextWord(b []byte) (word string, rest []byte) {
	b = skipSpace(b)
	i := 0
	for i < len(b) && (b[i] == '_' || b[i] >= 'a' && b[i] <= 'z' || b[i] >= 'A' && b[i] <= 'Z' || b[i] >= '0' && b[i] <= '9') {
		i++
	}
	if i == 0 {
		return "", b
	}
	if i <= len(lowerBuf{}) {
		// Known keywords come back without allocating.
		var lb lowerBuf
		for j := 0; j < i; j++ {
			lb[j] = b[j] | 0x20
			if b[j] >= '0' && b[j] <= '9' || b[j] == '_' {
				lb[j] = b[j]
			}
		}
		if kw, ok := keywords[string(lb[:i])]; ok {
			return kw, b[i:]
		}
	}
	return strings.ToLower(string(b[:i])), b[i:]
}

type lowerBuf [16]byte

// keywords are the words classification and routing compare against;
// nextWord returns these interned, so the hot path does not allocate.
var keywords = func() map[string]string {
	m := make(map[string]string)
	for _, w := range []string{
		"select", "with", "values", "call", "do", "set", "reset", "discard", "deallocate", "create",
		"declare", "prepare", "listen", "unlisten", "load", "begin", "start", "transaction", "local",
		"session", "characteristics", "authorization", "role", "time", "zone", "to", "all", "temp",
		"temporary", "global", "insert", "update", "delete", "merge", "into", "for", "lock", "copy",
		"read", "only", "write", "from", "where", "and", "or", "not", "as", "on", "table", "commit",
		"rollback", "end", "abort", "savepoint", "release", "show", "explain", "analyze", "true", "false",
		"search_path", "timezone", "application_name", "datestyle", "intervalstyle", "client_encoding",
		"statement_timeout", "work_mem", "default_transaction_read_only",
	} {
		m[w] = w
	}
	return m
}()

func skipSpace(b []byte) []byte {
	for len(b) > 0 {
		switch {
		case b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r' || b[0] == '\f':
			b = b[1:]
		case len(b) > 1 && b[0] == '-' && b[1] == '-':
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return nil
			}
			b = b[i+1:]
		case len(b) > 1 && b[0] == '/' && b[1] == '*':
			i := bytes.Index(b[2:], []byte("*/"))
			if i < 0 {
				return nil
			}
			b = b[i+4:]
		default:
			return b
		}
	}
	return b
}

// firstByteInteresting lets the hot path skip statements that cannot
// matter without allocating: only these first letters start a statement
// classifySQL acts on (SELECT is checked for advisory locks separately).
func firstByteInteresting(c byte) bool {
	switch c | 0x20 {
	case 's', 'r', 'd', 'c', 'p', 'l', 'w', 'u':
		return true
	}
	return false
}

var (
	advisoryLower = []byte("advisory_lock")
)

// needsClassify reports cheaply whether classifySQL could find anything.
func needsClassify(sql []byte) bool {
	b := skipSpace(sql)
	if len(b) == 0 {
		return false
	}
	if firstByteInteresting(b[0]) || bytes.IndexByte(b, ';') >= 0 {
		return true
	}
	return false
}

func classifyOne(stmt []byte) stmtClass {
	var c stmtClass
	w, rest := nextWord(stmt)
	switch w {
	case "select", "with", "values", "call", "do":
		if hasSessionAdvisoryLock(stmt) {
			c.pin = "session advisory lock"
		}
	case "set":
		c = classifySet(rest)
	case "reset":
		name, _ := nextWord(rest)
		if name == "all" {
			c.resetAll = true
		} else if name != "" {
			c.reset, c.setName = true, name
		}
	case "discard":
		what, _ := nextWord(rest)
		switch what {
		case "all":
			c.discard = true
		case "temp", "temporary":
		}
	case "deallocate":
		what, r := nextWord(rest)
		if what == "prepare" {
			what, _ = nextWord(r)
		}
		if what == "all" {
			c.discard = true
		}
	case "create":
		w2, r := nextWord(rest)
		if w2 == "global" || w2 == "local" {
			w2, r = nextWord(r)
		}
		if w2 == "temp" || w2 == "temporary" {
			low := bytes.ToLower(r)
			if !bytes.Contains(low, []byte("on commit drop")) {
				c.pin = "temporary table"
			}
		}
	case "declare":
		low := bytes.ToLower(rest)
		if bytes.Contains(low, []byte("with hold")) {
			c.pin = "WITH HOLD cursor"
		}
	case "prepare":
		c.pin = "SQL PREPARE"
	case "listen":
		c.listen = channelName(rest)
		if c.listen == "" {
			c.pin = "LISTEN"
		}
	case "unlisten":
		r := skipSpace(rest)
		if len(r) > 0 && r[0] == '*' {
			c.unlistenAll = true
		} else {
			c.unlisten = channelName(rest)
		}
	case "load":
		c.pin = "LOAD"
	}
	return c
}

// hasSessionAdvisoryLock spots pg_advisory_lock, pg_try_advisory_lock and
// their _shared forms; pg_advisory_xact_lock ("advisory_xact") and
// pg_advisory_unlock do not match. The search ignores ASCII case and does
// not allocate.
func hasSessionAdvisoryLock(stmt []byte) bool {
	return indexFold(stmt, advisoryLower) >= 0
}

// indexFold finds lowerPat (lower case ASCII) in s ignoring ASCII case.
func indexFold(s, lowerPat []byte) int {
	n := len(lowerPat)
	for i := 0; i+n <= len(s); i++ {
		if s[i]|0x20 != lowerPat[0] {
			continue
		}
		j := 1
		for j < n && (s[i+j]|0x20 == lowerPat[j] || s[i+j] == lowerPat[j]) {
			j++
		}
		if j == n {
			return i
		}
	}
	return -1
}

// classifySet handles SET [SESSION|LOCAL] name {TO|=} value.
func classifySet(rest []byte) stmtClass {
	var c stmtClass
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
				c.setName, c.setValue = "default_transaction_read_only", "on"
			case bytes.Contains(low, []byte("read write")):
				c.setName, c.setValue = "default_transaction_read_only", "off"
			default:
				c.pin = "SET SESSION CHARACTERISTICS"
			}
			return c
		}
		if w2 == "authorization" {
			c.pin = "SET SESSION AUTHORIZATION"
			return c
		}
		w, r = w2, r2
	case "role":
		c.pin = "SET ROLE"
		return c
	case "time":
		w2, r2 := nextWord(r)
		if w2 == "zone" {
			w, r = "timezone", r2
			v := strings.TrimSpace(string(skipSpace(r)))
			c.setName, c.setValue = w, v
			return c
		}
	}
	if w == "" {
		return c
	}
	// Dotted names (extension GUCs like app.tenant).
	for len(r) > 0 && r[0] == '.' {
		var part string
		part, r = nextWord(r[1:])
		w += "." + part
	}
	r = skipSpace(r)
	if len(r) > 0 && r[0] == '=' {
		r = r[1:]
	} else if to, r2 := nextWord(r); to == "to" {
		r = r2
	}
	c.setName = w
	c.setValue = strings.TrimSpace(string(skipSpace(r)))
	return c
}
