package classify

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestBytes2x(t *testing.T) {
	// Every byte value in every position, next to assorted neighbours.
	for _, fill := range []byte{0x00, 0x20, 0x21, 0x2f, 0x30, 0x7f, 0x80, 0xa1, 0xff} {
		for pos := 0; pos < 8; pos++ {
			for v := 0; v < 256; v++ {
				var w [8]byte
				for k := range w {
					w[k] = fill
				}
				w[pos] = byte(v)
				m := bytes2x(binary.LittleEndian.Uint64(w[:]))
				for k := range w {
					want := w[k] >= 0x21 && w[k] <= 0x2f
					if got := m>>(8*k)&0xff == 0x80; got != want || m>>(8*k)&0x7f != 0 {
						t.Fatalf("bytes2x(% x): byte %d mask %#x, want in range = %v", w, k, m>>(8*k)&0xff, want)
					}
				}
			}
		}
	}
}

func TestKeywordsAreInterned(t *testing.T) {
	for _, kw := range keywords {
		if len(kw) > len(lowerBuf{}) {
			continue // longer words are not looked up
		}
		in := []byte(strings.ToUpper(kw) + " x")
		var w string
		if n := testing.AllocsPerRun(10, func() { w, _ = nextWord(in) }); n != 0 || w != kw {
			t.Errorf("nextWord(%q) = %q with %.0f allocs, want %q and none", in, w, n, kw)
		}
	}
	if kw := lookupKeyword([]byte("abalance")); kw != "" {
		t.Errorf("lookupKeyword(abalance) = %q", kw)
	}
}

// The reference implementations below are the straightforward byte-by-byte
// versions the optimised code in lex.go and functions.go replaced. The
// test and the fuzz target check that both agree on every input.

func refSplitStatement(sql []byte) (stmt, rest []byte) {
	stmt, rest, _ = refSplitStatementMode(sql, false)
	return stmt, rest
}

// refSplitStatementMode reads every string as an escape string when
// backslashes is set (standard_conforming_strings off).
func refSplitStatementMode(sql []byte, backslashes bool) (stmt, rest []byte, open bool) {
	i := 0
	for i < len(sql) {
		switch c := sql[i]; c {
		case ';':
			return sql[:i], sql[i+1:], false
		case '\'':
			if backslashes || i > 0 && (sql[i-1] == 'e' || sql[i-1] == 'E') && (i == 1 || !refIdentCont(sql[i-2])) {
				// E'...': a backslash escapes the next byte.
				j := i + 1
				for ; j < len(sql); j++ {
					if sql[j] == '\\' {
						j++
					} else if sql[j] == '\'' {
						if j+1 < len(sql) && sql[j+1] == '\'' {
							j++
							continue
						}
						if k := refContinuation(sql, j+1); k >= 0 {
							j = k
							continue
						}
						break
					}
				}
				if j >= len(sql) {
					return sql, nil, true
				}
				i = j + 1
				continue
			}
			j := bytes.IndexByte(sql[i+1:], '\'')
			if j < 0 {
				return sql, nil, true
			}
			i += j + 2
			continue
		case '"':
			j := bytes.IndexByte(sql[i+1:], c)
			if j < 0 {
				return sql, nil, true
			}
			i += j + 2
			continue
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				j := bytes.IndexAny(sql[i:], "\r\n") // (a CR ends a line too)
				if j < 0 {
					return sql, nil, false
				}
				i += j + 1
				continue
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				// Block comments nest.
				depth, j := 1, i+2
				for depth > 0 && j+1 < len(sql) {
					switch {
					case sql[j] == '/' && sql[j+1] == '*':
						depth, j = depth+1, j+2
					case sql[j] == '*' && sql[j+1] == '/':
						depth, j = depth-1, j+2
					default:
						j++
					}
				}
				if depth > 0 {
					return sql, nil, true
				}
				i = j
				continue
			}
		case '$':
			j := bytes.IndexByte(sql[i+1:], '$')
			if j >= 0 && refDollarTag(sql[i+1:i+1+j]) && !refInIdentifier(sql, i) {
				tag := sql[i : i+j+2]
				k := bytes.Index(sql[i+len(tag):], tag)
				if k < 0 {
					return sql, nil, true
				}
				i += len(tag) + k + len(tag)
				continue
			}
		}
		i++
	}
	return sql, nil, false
}

// refContinuation returns the index of the quote that continues a string
// whose closing quote ends at sql[i-1]: blanks, newlines and "--"
// comments (each running to a CR or LF), at least one newline among them,
// then a quote; -1 if none does.
func refContinuation(sql []byte, i int) int {
	sawNewline := false
	for i < len(sql) {
		switch {
		case sql[i] == '\n' || sql[i] == '\r':
			sawNewline = true
			i++
		case strings.IndexByte(" \t\f", sql[i]) >= 0:
			i++
		case strings.HasPrefix(string(sql[i:]), "--"):
			nl := strings.IndexAny(string(sql[i:]), "\r\n")
			if nl < 0 {
				return -1
			}
			i += nl
		case sql[i] == '\'' && sawNewline:
			return i
		default:
			return -1
		}
	}
	return -1
}

func refDollarTag(tag []byte) bool {
	for k, c := range tag {
		letter := c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (k == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// refInIdentifier: the run of identifier bytes before sql[i] holds
// something other than digits (a number's '$' starts a new token).
func refInIdentifier(sql []byte, i int) bool {
	start := i
	for start > 0 && refIdentCont(sql[start-1]) {
		start--
	}
	return strings.TrimLeft(string(sql[start:i]), "0123456789") != ""
}

func refIdentCont(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func refNextWord(b []byte) (word string, rest []byte) {
	b = skipSpace(b)
	i := 0
	for i < len(b) && (b[i] == '_' || b[i] >= 'a' && b[i] <= 'z' || b[i] >= 'A' && b[i] <= 'Z' || b[i] >= '0' && b[i] <= '9') {
		i++
	}
	if i == 0 {
		return "", b
	}
	return strings.ToLower(string(b[:i])), b[i:]
}

// refClassifySQL is the original statement loop over refSplitStatement,
// run for both readings of backslashes in strings: a text the two read
// differently pins. classifyOne's own building blocks are compared one by
// one.
func refClassifySQL(sql []byte) Class {
	c, _ := refClassifyMode(sql, false)
	if b, open := refClassifyMode(sql, true); !b.equal(&c) && !open {
		return Class{Pin: pinStringEscapes, ReservedName: c.ReservedName || b.ReservedName}
	}
	return c
}

func refClassifyMode(sql []byte, backslashes bool) (out Class, open bool) {
	var stmts [][]byte
	for rest := sql; len(rest) > 0; {
		var one []byte
		var o bool
		one, rest, o = refSplitStatementMode(rest, backslashes)
		open = open || o
		stmts = append(stmts, one)
		if len(stmts) == 1 && len(skipSpace(rest)) == 0 {
			return classifyOne(one), open // one statement
		}
	}
	if len(stmts) == 0 {
		return Class{}, open
	}
	out.Several = true
	var changes []Change
	stmt := 0 // the statements PostgreSQL runs: not blanks and comments
	for _, one := range stmts {
		c := classifyOne(one)
		if c.Listen != "" {
			c.Pin = pinListenInSeveral
		}
		if c.Pin != "" && out.Pin == "" {
			out.Pin = c.Pin
		}
		out.Discard = out.Discard || c.Discard
		out.DiscardAll = out.DiscardAll || c.DiscardAll
		out.ReservedName = out.ReservedName || c.ReservedName
		if c.Change != (Change{}) {
			c.Stmt = stmt
			changes = append(changes, c.Change)
		}
		if len(skipSpace(one)) > 0 {
			stmt++
		}
	}
	for i, ch := range changes {
		if i == 0 {
			out.Change = ch
		} else {
			out.More = append(out.More, ch)
		}
	}
	return out, open
}

func checkClassifyMatchesReference(t *testing.T, sql []byte) {
	t.Helper()
	s1, r1 := splitStatement(sql)
	s2, r2 := refSplitStatement(sql)
	if !bytes.Equal(s1, s2) || !bytes.Equal(r1, r2) || (r1 == nil) != (r2 == nil) {
		t.Fatalf("splitStatement(%q) = %q, %q; reference %q, %q", sql, s1, r1, s2, r2)
	}
	if a, b := hasSessionAdvisoryLock(sql), refHasSessionAdvisoryLock(sql); a != b {
		t.Fatalf("hasSessionAdvisoryLock(%q) = %v; reference %v", sql, a, b)
	}
	w1, rest1 := nextWord(sql)
	w2, rest2 := refNextWord(sql)
	if w1 != w2 || !bytes.Equal(rest1, rest2) {
		t.Fatalf("nextWord(%q) = %q, %q; reference %q, %q", sql, w1, rest1, w2, rest2)
	}
	want := refClassifySQL(sql)
	if a := SQL(sql); !a.equal(&want) {
		t.Fatalf("SQL(%q) = %+v; reference %+v", sql, a, want)
	}
	if !Needed(sql) && !want.equal(&Class{}) {
		t.Fatalf("Needed(%q) = false, but the statement classifies as %+v", sql, want)
	}
}

var classifyEquivalenceSeeds = []string{
	"", ";", ";;", " ; ", "select 1", "select 1;", "select 1; ", "select 1;\n\t", "select 1; -- x", "select 1; /* x */",
	"select 1; /* x", "select 1; --", "select 1;;", "select 1; ; create temp table t()",
	"SELECT abalance FROM pgbench_accounts WHERE aid = 48857;",
	"select 'x; ", "select pg_advisory_lock(1);\n", "select 'pg_advisory_lock(1);  ", "select pg_advisory_;lock ",
	"load 'x; ", "set x = 'a; ", "listen \"c; ", "create temp table t(); ", "declare c cursor with hold for select 1;",
	"UPDATE pgbench_accounts SET abalance = abalance + -3121 WHERE aid = 39822;",
	"select ';'; create temp table x()", "select \"a;b\"; prepare p as select 1", "select 'abc", "select \"abc",
	"select 1 -- ; \n; listen x", "select 1 - -1; x", "select 1 -", "select 1 /", "select 1 /* ; */ ; y",
	"select 1 /* ; *", "select 1/*/; x", "select 1 --; x", "select $$;$$; x", "select $a$;$a$; x", "select $a$;$b$; x",
	"select $1; x", "select $; x", "select $ab; x", "select $a b$; x", "$", "$$", "$a$", "$a$$a$;", "select $a$",
	"select pg_advisory_lock(1)", "SELECT PG_ADVISORY_LOCK(1)", "select pg_try_advisory_lock(1)",
	"select pg_advisory_lock_shared(1)", "select pg_advisory_xact_lock(1)", "select pg_advisory_unlock(1)",
	"select set_config('a', 'b', false)", "select set_config('a', 'b', true)", "select set_config('a', (1,",
	"select advisory_lock", "advisory_lock", "_lock", "advisory_", "xadvisory_lockx", "ADVISORY_LOCK", "AdViSoRy_LoCk",
	"advisory\x7flock", "advisory_loc", "dvisory_lock", "advisory__lock", "advisory_advisory_lock", "a_dvisory_lock",
	"ádvisory_lock", "advisorY_lOck", "advisory_lock\x00", "\x41DVISORY\x5fLOCK", "advisory\xdflock",
	"set search_path to a, b; select 1;  ", "reset all;", "discard all; select 1", "listen a; listen b", "unlisten *;",
	"BEGIN", "BEGIN;", "begin; select 1; commit;", "set a.b = 1; commit; select 1", "rollback to s; set x = 1",
	"select 1; unlisten *; unlisten a", "begin; set local x = 1; set y = 2; end", "abort; -- x\n; reset all", "/* hi */ set statement_timeout = 5",
	"with x as (select pg_advisory_lock(1)) select 1", "values (pg_advisory_lock(1));", "call p(pg_advisory_lock(1))",
	"do $$begin perform pg_advisory_lock(1); end$$;", "selectxyz pg_advisory_lock(1)", "unlisten c;", "deallocate p",
	"/* advisory_lock */ select 1;", "-- x;\n", "/* x;", "Select\tpg_advisory_lock(1) ;  ",
	"/* /* */ select 1 */ set search_path = evil", "/* a /* b */ c */ select 1; listen x", "/* /* */ set x = 1",
	"/*/ set x = 1 */ select 1", "/* /*/ */ set x = 1", "select 1 /* /* ; */ ; */ ; set x = 1", "/**/set x=1",
	"select e'\\''; set search_path=x; --'", "select E'\\\\'; set x = 1", "select e'a''b;'; set x = 1",
	"select name'x'; set x = 1", "select 'e\\'; set x = 1", "e'\\", "select e'", "select xe'\\''; y",
	"select $e$;$e$; e'\\';' ; set x=1", "select E'a'\n'\\'' , '\\'; set enable_seqscan = off; select 'z'",
	"select e'a' \n -- c\n '\\''; set x = 1", "select e'a'  'b'; set x = 1", "set application_name = 'C:\\';",
	"SET \"search_path\" = evil", "SET SESSION \"search_path\" TO evil", "RESET \"search_path\"", "reset app.tenant",
	"set app.\"x\" = 1", "-- x\rSET search_path = evil", "SELECT 1 -- x\r; SET search_path = evil",
	"SELECT 1; -- x\rSET search_path = evil", "SELECT E'a' -- c\n'\\'' ; SET search_path = evil; SELECT '\\'",
	"SELECT E'a'\n-- c\r'\\''; set x = 1; --'", "select e'a' -- c", "select 1 as a$b$; set search_path = x", "select $é$ ' $é$; set search_path = x; --'", "select 1$a$;$a$; set x=1",
	"select $1$x$; set x = 1", "select a1$b$; set x = 1", "select _$$; set x = 1", "select $_a$;$_a$; y",
	"select 'a\\' -- '; set search_path = evil; -- x;", "select e'a'\n\n'b\\';'; set x = 1",
	"select U&'a;b', U&'it''s'; set x = 1", "select 1 as U&\"a;b\"; set x = 1", "select U&'\\\\'; set x = 1",
	"SET U&\"search\\005fpath\" TO x", "RESET U&\"search!005fpath\" UESCAPE '!'", "set app.U&\"x\\0041\" = 1",
	"select U&\"set\\005fconfig\"('a', 'b', false)", "select U&\"set_config\" UESCAPE '!' ('a', 'b', false)",
	"select U&\"a\"\"\\\" (1)", "select u&\"x\\", "select u&", "create table U&\"pg\\005ftemp\".t(x int)",
	"execute pgferry_1", "EXECUTE \"pgferry_1\";  ", "select 1; execute U&\"pgferry\\005f1\"", "deallocate prepare pgferry_1;",
	"/* execute pgferry_1 */ explain select 1", "explain select 'execute pgferry_1'", "prepare pgferry_7 as select 1 ; ",
	"execute u&\"x;  ", "select '\\'; execute pgferry_1; --'",
	string(benchPgbenchSelect), string(benchLongSelect), string(benchMulti),
}

func TestClassifyMatchesReference(t *testing.T) {
	for _, s := range classifyEquivalenceSeeds {
		checkClassifyMatchesReference(t, []byte(s))
	}
	for _, s := range benchTPCB {
		checkClassifyMatchesReference(t, s)
	}
}

func FuzzClassifyMatchesReference(f *testing.F) {
	for _, s := range classifyEquivalenceSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		checkClassifyMatchesReference(t, []byte(sql))
	})
}

// PostgreSQL's block comments nest: what follows the outer "*/" is the
// statement, which a comment that ended at the first "*/" would hide.
func TestAStatementAfterNestedBlockCommentsIsClassified(t *testing.T) {
	c := SQL([]byte("/* /* */ select 1 */ SET search_path = evil"))
	if c.SetName != "search_path" || c.SetValue != "evil" {
		t.Fatalf("SQL = %+v; want SET search_path = evil tracked", c)
	}
	if c := SQL([]byte("/* a /* b */ c */ LISTEN ch")); c.Listen != "ch" {
		t.Fatalf("SQL = %+v; want LISTEN ch", c)
	}
	if c := SQL([]byte("/* a /* b */ SET x = 1")); !c.equal(&Class{}) {
		t.Fatalf("SQL of an unterminated comment = %+v; want nothing (PostgreSQL rejects it)", c)
	}
}

// An escape string (E'...') ends at a quote no backslash escapes: what
// follows it is another statement, which a plain string's rules would
// hide inside the string.
func TestAStatementAfterAnEscapeStringIsClassified(t *testing.T) {
	c := SQL([]byte(`select e'\''; set search_path = evil; --'`))
	if c.SetName != "search_path" || c.SetValue != "evil" {
		t.Fatalf("SQL = %+v; want SET search_path = evil tracked", c)
	}
	if c := SQL([]byte(`select name'x'; set x = 1`)); c.SetName != "x" {
		t.Fatalf("SQL = %+v; want SET x (a plain string after an identifier)", c)
	}
	// Whether the quote after a backslash ends a plain string depends on
	// standard_conforming_strings: read both ways, the text pins.
	for _, sql := range []string{`select 'a\'; set search_path = evil; --'`, `select 'a\''; set x = 1; --'`} {
		if c := SQL([]byte(sql)); c.Pin != pinStringEscapes {
			t.Fatalf("SQL(%q) = %+v; want it pinned (%s)", sql, c, pinStringEscapes)
		}
	}
	// A reading that leaves a string open is one the server refuses
	// whole: a Windows path in a plain string does not pin.
	if c := SQL([]byte(`set application_name = 'C:\';`)); c.Pin != "" || c.SetName != "application_name" {
		t.Fatalf("SQL = %+v; want SET application_name tracked", c)
	}
	// A line comment may end the text: the reading that shows the SET
	// is not refused, and the text pins.
	if c := SQL([]byte(`select 'a\' -- '; set search_path = evil; -- x;`)); c.Pin != pinStringEscapes {
		t.Fatalf("SQL = %+v; want it pinned", c)
	}
	// An escape string goes on after a newline and a quote, with its
	// escapes: the SET is inside it.
	if c := SQL([]byte("select E'a'\n'\\'' , '\\'; set enable_seqscan = off; select 'z'")); c.Pin != pinStringEscapes && c.SetName != "enable_seqscan" {
		t.Fatalf("SQL = %+v; want the SET after the continued escape string seen", c)
	}
	if c := SQL([]byte(`select 'a\b'; set x = 1`)); c.SetName != "x" || c.Pin != "" {
		t.Fatalf("SQL = %+v; want SET x: a backslash before no quote reads one way", c)
	}
}

// A '$' inside an identifier opens no dollar quote, and a tag may hold
// bytes from 0x80, as in PostgreSQL's lexer: either way a statement after
// it is seen.
func TestDollarQuotesAreRecognisedAsPostgreSQLDoes(t *testing.T) {
	for _, sql := range []string{"select 1 as a$b$; set search_path = x", "select $é$ ' $é$; set search_path = x; --'"} {
		if c := SQL([]byte(sql)); c.SetName != "search_path" {
			t.Errorf("SQL(%q) = %+v; want SET search_path tracked", sql, c)
		}
	}
	if c := SQL([]byte("select $a$; set x = 1 $a$")); !c.equal(&Class{}) {
		t.Errorf("SQL = %+v; want the SET inside the dollar quote left alone", c)
	}
}

// A Unicode escape string (U&'...') splits as a plain string, its
// backslashes included (PostgreSQL refuses the whole query when
// standard_conforming_strings is off), and a U&"..." identifier as a
// quoted one: a ';' in either ends no statement, and a statement after
// them is seen. (Checked against PostgreSQL 15.) The split was right
// before they were tested.
func TestUnicodeEscapeStringsAndIdentifiersSplitAsPostgreSQLDoes(t *testing.T) {
	for _, sql := range []string{`select U&'a;b', U&'it''s'; set x = 1`, `select 1 as U&"a;b"; set x = 1`,
		"select U&'a'\n'b;c'; set x = 1", `select U&'\\'; set x = 1`, `select 1 as U&"a"";b"; set x = 1`,
		`select U&'d!0061t' UESCAPE '!'; set x = 1`} {
		if c := SQL([]byte(sql)); c.SetName != "x" || c.Pin != "" {
			t.Errorf("SQL(%q) = %+v; want SET x tracked", sql, c)
		}
	}
	for _, sql := range []string{`select U&'a;b''; set x = 1'`, `select 1 as U&"a;""; set x = 1"`} {
		if c := SQL([]byte(sql)); !c.equal(&Class{}) {
			t.Errorf("SQL(%q) = %+v; want the SET inside the quote left alone", sql, c)
		}
	}
}
