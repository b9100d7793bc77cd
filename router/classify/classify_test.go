package classify

import (
	"bytes"
	"strings"
	"testing"
)

// Benchmarks of the per-query classification hot path: interceptQuery calls
// Needed and then SQL for every simple-protocol Query.

var (
	benchPgbenchSelect = []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 48857;")
	benchTPCB          = [][]byte{
		[]byte("BEGIN;"),
		[]byte("UPDATE pgbench_accounts SET abalance = abalance + -3121 WHERE aid = 39822;"),
		[]byte("SELECT abalance FROM pgbench_accounts WHERE aid = 39822;"),
		[]byte("UPDATE pgbench_tellers SET tbalance = tbalance + -3121 WHERE tid = 7;"),
		[]byte("UPDATE pgbench_branches SET bbalance = bbalance + -3121 WHERE bid = 1;"),
		[]byte("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 39822, -3121, CURRENT_TIMESTAMP);"),
		[]byte("END;"),
	}
	benchMulti = []byte("SET search_path TO app, public; SELECT 'a;b' AS x, $t$;$t$ AS y; " +
		"/* c; */ UPDATE t SET v = v + 1 WHERE id = 42; -- done;\nSELECT pg_advisory_lock(7); RESET ALL;  ")
	benchLongSelect = func() []byte {
		var b strings.Builder
		b.WriteString("SELECT o.order_id, o.customer_id, o.created_at, c.display_name\nFROM orders o JOIN customers c ON c.id = o.customer_id\nWHERE o.status IN (")
		for i := 0; b.Len() < 1900; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("'status_value_")
			b.WriteByte(byte('a' + i%26))
			b.WriteString("', 'it''s quoted'")
		}
		b.WriteString(")\n  AND c.note <> 'no -- comment here' ORDER BY o.created_at DESC LIMIT 50;")
		return []byte(b.String())
	}()
)

var benchSink Class

// classifyHot is what interceptQuery does with the text of a Query. It is
// not inlined so that a profile (callgrind) shows its cost per call.
//
//go:noinline
func classifyHot(sql []byte) {
	if Needed(sql) {
		benchSink = SQL(sql)
	}
}

func benchClassify(b *testing.B, sqls ...[]byte) {
	b.ReportAllocs()
	n := 0
	for _, s := range sqls {
		n += len(s)
	}
	b.SetBytes(int64(n))
	for b.Loop() {
		for _, s := range sqls {
			classifyHot(s)
		}
	}
}

func BenchmarkClassifyPgbenchSelect(b *testing.B) { benchClassify(b, benchPgbenchSelect) }

// BenchmarkClassifyTPCB classifies the seven queries of one pgbench
// tpcb-like transaction per op.
func BenchmarkClassifyTPCB(b *testing.B) { benchClassify(b, benchTPCB...) }

func BenchmarkClassifyTPCBUpdate(b *testing.B) { benchClassify(b, benchTPCB[1]) }
func BenchmarkClassifyTPCBInsert(b *testing.B) { benchClassify(b, benchTPCB[5]) }
func BenchmarkClassifyBegin(b *testing.B)      { benchClassify(b, []byte("BEGIN")) }
func BenchmarkClassifyBeginSemi(b *testing.B)  { benchClassify(b, []byte("BEGIN;")) }
func BenchmarkClassifyLongSelect(b *testing.B) { benchClassify(b, benchLongSelect) }
func BenchmarkClassifyMulti(b *testing.B)      { benchClassify(b, benchMulti) }

// BenchmarkClassifyIsPlainRead covers route.go's use of splitStatement
// (route_read_statements).
func BenchmarkClassifyIsPlainRead(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchBool = IsPlainRead(benchPgbenchSelect)
	}
}

var benchBool bool

func TestClassifyBenchInputsDoNotAllocate(t *testing.T) {
	all := append([][]byte{benchPgbenchSelect, benchLongSelect, benchMulti, []byte("BEGIN")}, benchTPCB...)
	for _, s := range all {
		if n := testing.AllocsPerRun(100, func() { classifyHot(s) }); n != 0 {
			// SET/RESET in benchMulti copy the name and value out of the
			// frame; everything else must not allocate.
			if !bytes.Equal(s, benchMulti) {
				t.Errorf("%q: %.1f allocs, want 0", s, n)
			}
		}
	}
}

func TestTheFirstWordsNeededTellsApartAreTheirWordsKeys(t *testing.T) {
	for w, k := range map[string]uint64{"set": keySet, "reset": keyReset, "discard": keyDiscard, "create": keyCreate,
		"declare": keyDeclare, "prepare": keyPrepare, "listen": keyListen, "unlisten": keyUnlisten, "load": keyLoad,
		"execute": keyExecute, "explain": keyExplain} {
		if got := wordKey([]byte(strings.ToUpper(w) + " x")); got != k {
			t.Errorf("the key of %q is %#x; the constant says %#x", w, got, k)
		}
	}
}

// The hot path skips classification for pgbench's statements and other
// plain reads and writes, and still classifies what it must.
func TestNeedsClassifySkipsOnlyWhatCannotMatter(t *testing.T) {
	skipped := append([][]byte{benchPgbenchSelect, []byte("select 1"), []byte("  Select * from t ;  "),
		[]byte("delete from t"), []byte("WITH x AS (select 1) SELECT * FROM x")}, benchTPCB...)
	for _, sql := range skipped {
		if Needed(sql) {
			t.Errorf("Needed(%q) = true; want the statement skipped", sql)
		}
	}
	classified := []string{"set x = 1", "SET search_path TO a;", "reset all", "discard all", "deallocate all",
		"create temp table t()", "declare c cursor with hold for select 1", "prepare p as select 1",
		"listen c", "unlisten *", "load 'x'", "select pg_advisory_lock(1)", "select 1; set x = 1",
		"update t set a = 1; listen c", "-- c;\nlisten c", "/* x */ set x = 1", "(select 1)",
		"with x as (select pg_advisory_lock(1)) select 1", "values (pg_advisory_lock(1))",
		"call p(pg_advisory_lock(1))", "do $$begin perform pg_advisory_lock(1); end$$;", "selectxyz 1",
		"/* /* */ select 1 */ SET search_path = evil", "/* a /* b */ c */ listen c",
		"select e'\\''; set search_path = evil; --'"}
	for _, sql := range classified {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; want it classified", sql)
		}
	}
}

func TestClassifySQL(t *testing.T) {
	tests := []struct {
		sql  string
		pin  bool
		set  string
		disc bool
	}{
		{"select 1", false, "", false},
		{"SELECT pg_advisory_lock(1)", true, "", false},
		{"select pg_advisory_xact_lock(1)", false, "", false},
		{"select pg_advisory_unlock(1)", false, "", false},
		{"create temp table t (x int)", true, "", false},
		{"CREATE TEMPORARY TABLE t (x int) ON COMMIT DROP", false, "", false},
		{"declare c cursor with hold for select 1", true, "", false},
		{"prepare p as select 1", true, "", false},
		{"set search_path to a, b", false, "search_path", false},
		{"SET LOCAL statement_timeout = 5", false, "", false},
		{"/* hi */ set statement_timeout = 5", false, "statement_timeout", false},
		{"discard all", false, "", true},
		{"deallocate all", false, "", true},
		{"select ';'; create temp table x()", true, "", false},
		{"set time zone 'UTC'", false, "timezone", false},
	}
	for _, tc := range tests {
		t.Run(tc.sql, func(t *testing.T) {
			c := SQL([]byte(tc.sql))
			if (c.Pin != "") != tc.pin || c.SetName != tc.set || c.Discard != tc.disc {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func FuzzClassifySQL(f *testing.F) {
	for _, s := range []string{"select 1", "set a.b = 'x'", "create temp table t()", "listen \"a\"\"b\"", "$a$;$a$; prepare", "--x\nreset all", "/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		SQL([]byte(sql))
		Needed([]byte(sql))
	})
}

// Routing's keyword scan reads plain quotes only: a text with a backslash
// before a quote, which an escape string or standard_conforming_strings
// off reads otherwise, is not taken for a plain read.
func TestATextWithABackslashBeforeAQuoteIsNotAPlainRead(t *testing.T) {
	for _, sql := range []string{`SELECT E'\'' , 1 FROM t FOR UPDATE --'`,
		`WITH q AS (SELECT E'\''), d AS (DELETE FROM t RETURNING 1) SELECT 1 FROM d -- '`} {
		if IsPlainRead([]byte(sql)) {
			t.Errorf("IsPlainRead(%q) = true; want it sent to the primary", sql)
		}
	}
	if !IsPlainRead([]byte(`SELECT 'a\b' FROM t`)) {
		t.Error("a backslash before no quote made a plain read a write")
	}
}

// Parameter names in quotes, comments ended by a carriage return, and an
// escape string continued past a comment: each hid a SET before.
func TestStatementsHiddenByQuotedNamesCarriageReturnsAndContinuedStringsAreSeen(t *testing.T) {
	for _, sql := range []string{`SET "search_path" = evil`, `SET SESSION "search_path" TO evil`, `RESET "search_path"`, `set app."x" = 1`} {
		if c := SQL([]byte(sql)); c.Pin != pinQuotedName {
			t.Errorf("SQL(%q) = %+v; want it pinned (%s)", sql, c, pinQuotedName)
		}
	}
	for _, sql := range []string{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE TABLE pg_temp.t(x int)", "create view PG_TEMP.v as select 1"} {
		if c := SQL([]byte(sql)); c.Pin != "temporary table" {
			t.Errorf("SQL(%q) = %+v; want it pinned (temporary table)", sql, c)
		}
	}
	for _, sql := range []string{"DECLARE c CURSOR WITH\nHOLD FOR SELECT 1", "declare c no scroll cursor with /* x */ hold for select 1"} {
		if c := SQL([]byte(sql)); c.Pin != "WITH HOLD cursor" {
			t.Errorf("SQL(%q) = %+v; want it pinned (WITH HOLD cursor)", sql, c)
		}
	}
	if c := SQL([]byte("declare c cursor for select 'with hold'")); c.Pin != "" {
		t.Errorf("SQL = %+v; want a cursor without hold left alone", c)
	}
	if c := SQL([]byte("reset app.tenant")); !c.Reset || c.SetName != "app.tenant" {
		t.Errorf("SQL(reset app.tenant) = %+v; want the dotted name reset", c)
	}
	for _, sql := range []string{"-- x\rSET search_path = evil", "SELECT 1 -- x\r; SET search_path = evil",
		"SELECT 1; -- x\rSET search_path = evil", "SELECT E'a' -- c\n'\\'' ; SET search_path = evil; SELECT '\\'"} {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false", sql)
		}
		if c := SQL([]byte(sql)); c.SetName != "search_path" {
			t.Errorf("SQL(%q) = %+v; want SET search_path tracked", sql, c)
		}
	}
}

// PostgreSQL reads U&"..." as the identifier its escapes spell (and
// U&"..." UESCAPE '!' with '!' for the backslash): SET U&"search\005fpath"
// sets search_path, which pgferry cannot track under that spelling. Each
// was tracked as a SET or RESET of a parameter named "u" before. (Checked
// against PostgreSQL 15.)
func TestASetOrResetOfAParameterNamedWithUnicodeEscapesPins(t *testing.T) {
	for _, sql := range []string{`SET U&"search\005fpath" TO x`, `RESET U&"search\005fpath"`,
		`SET SESSION u&"work_mem" = '64MB'`, `set app.U&"x\0041" = 1`, `set U&"app".x = 1`,
		`RESET U&"search!005fpath" UESCAPE '!'`, `SET /* c */ U&"search_path" TO x`,
		`SET U&"search!005fpath" /* c */ UESCAPE /* d */ '!' TO x;`} {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; want it classified", sql)
		}
		if c := SQL([]byte(sql)); c.Pin != pinQuotedName {
			t.Errorf("SQL(%q) = %+v; want it pinned (%s)", sql, c, pinQuotedName)
		}
	}
	// A value so spelled is replayed as written: it is tracked.
	if c := SQL([]byte(`set search_path to U&"sch\0065ma"`)); c.Pin != "" || c.SetName != "search_path" || c.SetValue != `U&"sch\0065ma"` {
		t.Errorf("SQL = %+v; want SET search_path tracked with its value as written", c)
	}
	if c := SQL([]byte(`SET LOCAL U&"work\005fmem" = '1MB'`)); !c.equal(&Class{}) {
		t.Errorf("SQL = %+v; want SET LOCAL left alone", c)
	}
}

// A schema named with Unicode escapes may be pg_temp: an object made in it
// lives for the session (CREATE TABLE U&"pg\005ftemp".t makes a temporary
// table).
func TestACreateInASchemaNamedWithUnicodeEscapesPins(t *testing.T) {
	for _, sql := range []string{`create table U&"pg\005ftemp".t(x int)`, `CREATE TABLE U&"pg\005ftemp" . t AS SELECT 1`,
		`create function U&"pg!005ftemp" UESCAPE '!'.f() returns int language sql as 'select 1'`,
		`CREATE TABLE /* U&" */ U&"pg\005ftemp".t(x int)`} {
		if c := SQL([]byte(sql)); c.Pin != "temporary table" {
			t.Errorf("SQL(%q) = %+v; want it pinned (temporary table)", sql, c)
		}
	}
	for _, sql := range []string{`create table U&"t\0041" as select 1`, `create table U&"app".t as select 1`} {
		if c := SQL([]byte(sql)); c.Pin != "" {
			t.Errorf("SQL(%q) pins (%s); want it left alone", sql, c.Pin)
		}
	}
}

// Routing does not decode Unicode escapes either: a function so named
// may be one that writes (nextval) or sets session state, and the
// statement goes to the primary.
func TestAFunctionNamedWithUnicodeEscapesIsNotAPlainRead(t *testing.T) {
	for _, sql := range []string{`select U&"nextv\0061l"('s')`, `SELECT U&"set\005fconfig"('a', 'b', false)`,
		`select U&"pg_try_advisory!005flock" UESCAPE '!' (1)`, `select 'U&"', U&"nextv\0061l"('s')`} {
		if IsPlainRead([]byte(sql)) {
			t.Errorf("IsPlainRead(%q) = true; want it sent to the primary", sql)
		}
	}
	if !IsPlainRead([]byte(`select U&"col\0041" from t where f(1)`)) {
		t.Error("a column named with Unicode escapes made a plain read a write")
	}
}

// PostgreSQL reads a dotted parameter name token by token: blanks and
// comments may stand around its dots (SET app . tenant = 1 sets
// app.tenant; checked against PostgreSQL 15). They hid the rest of the
// name, and a quoted part, before.
func TestADottedParameterNameWithBlanksAroundItsDotsIsReadWhole(t *testing.T) {
	if c := SQL([]byte("SET app . tenant = 1")); c.SetName != "app.tenant" || c.SetValue != "1" || c.Pin != "" {
		t.Errorf("SQL = %+v; want SET app.tenant = 1", c)
	}
	if c := SQL([]byte("reset app\n.tenant")); !c.Reset || c.SetName != "app.tenant" {
		t.Errorf("SQL = %+v; want RESET app.tenant", c)
	}
	for _, sql := range []string{`RESET app /* c */ . "tenant"`, `set app . U&"x\0041" = 1`} {
		if c := SQL([]byte(sql)); c.Pin != pinQuotedName {
			t.Errorf("SQL(%q) = %+v; want it pinned (%s)", sql, c, pinQuotedName)
		}
	}
	if c := SQL([]byte("set x = .5")); c.SetName != "x" || c.SetValue != ".5" {
		t.Errorf("SQL = %+v; want SET x = .5", c)
	}
}

func TestEndsFailedTransactionFindsTheStatementsPostgreSQLRunsInOne(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		{"commit", true}, {"COMMIT AND CHAIN", true}, {" /* c */ end", true}, {"rollback", true},
		{"Rollback to savepoint a", true}, {"abort", true}, {"prepare transaction 'x'", true},
		{"commit prepared 'x'", false}, {"ROLLBACK PREPARED 'x'", false}, {"prepare s as select 1", false},
		{"PREPARE TRANSACTION $$x$$", true}, {"prepare transaction as select 1", false},
		{"prepare Transaction(int) as select $1", false}, {"prepare transaction asx", true},
		{"select 1", false}, {"", false}, {"committed", false}, {"begin", false},
	}
	for _, tc := range tests {
		if got := EndsFailedTransaction([]byte(tc.sql)); got != tc.want {
			t.Errorf("EndsFailedTransaction(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { EndsFailedTransaction([]byte("rollback to savepoint a")) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// PREPARE TRANSACTION ends its transaction and leaves the session nothing
// to keep: it pins nobody. A PREPARE of a statement named transaction (as
// PostgreSQL reads PREPARE transaction AS ...) is a SQL PREPARE as any.
func TestPrepareTransactionPinsNobodyAndAStatementNamedTransactionPins(t *testing.T) {
	tests := []struct {
		sql      string
		prepared bool   // PrepareTransaction
		pin      string // Pin
	}{
		{"PREPARE TRANSACTION 'g1'", true, ""},
		{"prepare /* c */ transaction E'g\\1'", true, ""},
		{"prepare transaction AS select 1", false, "SQL PREPARE"},
		{"PREPARE transaction (int) AS select $1", false, "SQL PREPARE"},
		{"prepare p as select 1", false, "SQL PREPARE"},
	}
	for _, tc := range tests {
		if c := SQL([]byte(tc.sql)); c.PrepareTransaction != tc.prepared || c.Pin != tc.pin {
			t.Errorf("SQL(%q): PrepareTransaction %v, Pin %q; want %v, %q", tc.sql, c.PrepareTransaction, c.Pin, tc.prepared, tc.pin)
		}
	}
}
