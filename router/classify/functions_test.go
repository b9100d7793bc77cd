package classify

import (
	"bytes"
	"testing"
)

// A session advisory lock is taken by a function call: the name without
// a '(' after it (a column, a comment, a string) pins nothing.
func TestAnAdvisoryLockNameThatIsNotCalledPinsNothing(t *testing.T) {
	for _, sql := range []string{"select advisory_lock from t", "/* pg_advisory_lock */ select 1;",
		"select 'pg_advisory_lock'"} {
		if c := SQL([]byte(sql)); c.Pin != "" {
			t.Errorf("SQL(%q) pins (%s); no function is called", sql, c.Pin)
		}
	}
	for _, sql := range []string{"select pg_advisory_lock(1)", "select pg_advisory_lock (1)",
		"select x from pg_try_advisory_lock_shared(2) x", "SELECT PG_ADVISORY_LOCK/**/(1)"} {
		if c := SQL([]byte(sql)); c.Pin == "" {
			t.Errorf("SQL(%q) does not pin; it takes a session advisory lock", sql)
		}
	}
}

// A session advisory lock taken in any statement that may call a
// function pins, whatever its first word: the function runs all the same.
func TestASessionAdvisoryLockPinsWhicheverStatementCallsIt(t *testing.T) {
	for _, sql := range []string{"explain analyze select pg_advisory_lock(1)", "insert into t select pg_advisory_lock(1)",
		"(select pg_advisory_lock(1))", "update t set a = pg_try_advisory_lock(1) where b", "copy (select pg_advisory_lock(1)) to stdout",
		"create table t as select pg_advisory_lock(1)", "delete from t where pg_advisory_lock_shared(id) is not null;",
		"declare c cursor for select pg_advisory_lock(1)", "merge into t using (select pg_advisory_lock(1) x) s on true when matched then do nothing"} {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; it takes a session advisory lock", sql)
		}
		if c := SQL([]byte(sql)); c.Pin == "" {
			t.Errorf("SQL(%q) does not pin; it takes a session advisory lock", sql)
		}
	}
	// Statements whose arguments are names and constants call nothing.
	for _, sql := range []string{"set application_name = 'pg_advisory_lock(1)'", "listen pg_advisory_lock",
		"reset pg_advisory_lock"} {
		if c := SQL([]byte(sql)); c.Pin != "" {
			t.Errorf("SQL(%q) pins (%s); it calls no function", sql, c.Pin)
		}
	}
}

// set_config with is_local not a literal true is a session's SET that
// pgferry cannot track: it pins, in any statement that may call it.
func TestASetConfigThatOutlivesItsTransactionPins(t *testing.T) {
	pins := []string{"select set_config('search_path', 'x', false)", "SELECT SET_CONFIG('app.tenant', '42', FALSE)",
		"select set_config('a', 'b', $3)", "select pg_catalog.set_config('a','b',false)",
		"select set_config ( 'a' , 'b' , false )", "select set_config('a', 'b', 'f')",
		"select set_config('a', concat('x', ','), false)", "select set_config('a', 'b,c', false)",
		"select set_config('a', 'b'", "select set_config('a', 'b', /* true */ false)",
		"with x as (select 1) select set_config('a', 'b', false) from x", "update t set v = set_config('a', 'b', false)",
		"select set_config('a', 'b', tru)", "select set_config('a', 'b', true and false)",
		// A ", true)" hidden in a dollar quote or an escape string is not
		// the third argument (review: each sets app.tenant for the session).
		"select set_config('app.tenant', case when $$, true)$$ = '' then '' else '42' end, false)",
		"select set_config('app.tenant', case when $q$, true)$q$ = '' then '' else '42' end, false)",
		"select set_config('app.tenant', case when E'\\', true) --' = '' then '' else '42' end, false)",
		// A backslash in a plain string: with standard_conforming_strings
		// off it escapes the quote, and "\', true) --" is all one string.
		"select set_config('app.tenant', '\\', true) --', false)",
		// A quoted name.
		`select "set_config"('app.x', '7', false)`, `select pg_catalog."set_config"('app.x', '7', false)`,
		// is_local in a Unicode escape string: true to PostgreSQL, not a
		// literal true to pgferry (the safe side; so it was before these
		// were tested).
		`select set_config('a', 'b', U&'t')`, `select set_config('a', 'b', u&'\0074')`,
		`select set_config('a', 'b', U&'t' UESCAPE '!')`}
	for _, sql := range pins {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; it sets a parameter for the session", sql)
		}
		if c := SQL([]byte(sql)); c.Pin != pinSetConfig {
			t.Errorf("SQL(%q) pins %q; want %q", sql, c.Pin, pinSetConfig)
		}
	}
	local := []string{"select set_config('search_path', 'x', true)", "select set_config('a', 'b', 'on')",
		"select set_config('a', 'b,c', TRUE)", "select set_config('a', f(1, 2), true)",
		"select set_config('a', 'b', -- local\n true)", "select current_setting('x')",
		"select offset_config(1, 2, false)", "select my_set_config('a', 'b', false)",
		"select set_config, f(1) from t"}
	for _, sql := range local {
		if c := SQL([]byte(sql)); c.Pin != "" {
			t.Errorf("SQL(%q) pins (%s); nothing outlives the transaction", sql, c.Pin)
		}
	}
}

func TestAFunctionCallOfASessionFunctionPins(t *testing.T) {
	for oid, want := range map[uint32]string{2880: pinAdvisoryLock, 2889: pinAdvisoryLock, 2078: pinSetConfig,
		2885: "" /* pg_advisory_unlock_shared */, 3089: "" /* pg_advisory_xact_lock */, 1: ""} {
		if got := FunctionCallPin(oid); got != want {
			t.Errorf("FunctionCallPin(%d) = %q; want %q", oid, got, want)
		}
	}
}

// hasSessionAdvisoryLock (the search sessionFunctionPin makes, alone)
// reports whether stmt names pg_advisory_lock,
// pg_try_advisory_lock or their _shared forms anywhere (advisoryLockAt).
func hasSessionAdvisoryLock(stmt []byte) bool {
	for i := 0; ; i++ {
		j := bytes.IndexByte(stmt[i:], '_')
		if j < 0 {
			return false
		}
		i += j
		if advisoryLockAt(stmt, i) {
			return true
		}
	}
}

func refHasSessionAdvisoryLock(stmt []byte) bool {
	lowerPat := []byte("advisory_lock")
	n := len(lowerPat)
	for i := 0; i+n <= len(stmt); i++ {
		j := 0
		for j < n && (stmt[i+j]|0x20 == lowerPat[j] || stmt[i+j] == lowerPat[j]) {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

// A function named with Unicode escapes (U&"set\005fconfig") is whatever
// its escapes spell, which pgferry does not decode: one called with an
// escape in its name, or with a UESCAPE clause, pins. (Checked against
// PostgreSQL 15: each of these sets a parameter or takes a lock for the
// session.)
func TestAFunctionNamedWithUnicodeEscapesPinsWhenCalled(t *testing.T) {
	for _, sql := range []string{`select U&"set\005fconfig"('app.a', 'b', false)`, `SELECT u&"pg_advisory\005flock"(1)`,
		`select pg_catalog.U&"set\005fconfig" ('a', 'b', false)`, `select U&"pg_catalog".U&"pg\005fadvisory\005flock"(1)`,
		`select U&"pg_advisory_\006cock" /* c */ (1)`, `insert into t select U&"set\005fconfig"('a', 'b', false)`,
		`select U&"set_config" UESCAPE '!' ('a', 'b', false)`, `select U&"set_config"/**/UESCAPE/**/'!'/**/('a', 'b', false)`,
		"select U&\"set!005fconfig\" UESCAPE '!'\n'' ('a', 'b', false)", `select U&"set!005fconfig" UESCAPE E'!'('a', 'b', false);`,
		// A U&" in a string, a comment or a name before it must not hide it.
		`select 'U&"' as x, U&"set\005fconfig"('app.tenant', '42', false)`, `select /* U&" */ U&"set\005fconfig"('a', 'b', false)`,
		`select "aU&" as y, U&"pg\005fadvisory\005flock"(1)`, "select 1 -- U&\"\n, U&\"set\\005fconfig\"('a', 'b', false)"} {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; it may call a session function", sql)
		}
		if c := SQL([]byte(sql)); c.Pin == "" {
			t.Errorf("SQL(%q) does not pin; it may call a session function", sql)
		}
	}
	// Not called, or with no escape (the name is as written, read as
	// "set_config" is).
	for _, sql := range []string{`select U&"col\0041" from t where f(1)`, `select U&"my_func"(1)`,
		`select U&"set_config"('a', 'b', true)`, `select U&'set\005fconfig'`, `select U&"set\005fconfig" from t`} {
		if c := SQL([]byte(sql)); c.Pin != "" {
			t.Errorf("SQL(%q) pins (%s); no session function is called", sql, c.Pin)
		}
	}
}
