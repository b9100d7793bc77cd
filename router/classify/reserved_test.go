package classify

import (
	"strings"
	"testing"
)

// Every SQL statement that names a server-side prepared statement (runs,
// explains, copies into a table, drops or creates one) by a name beginning
// with pgferry's prefix, as PostgreSQL reads the name, is reported: the
// router refuses it, so that no client runs or drops the statements pgferry
// prepared on a shared server for others, nor takes a name pgferry may
// want. (Each reads so on PostgreSQL 15: the unquoted name folds to lower
// case, the quoted one does not, the escaped one is what its escapes spell.)
func TestAStatementNamingAPreparedStatementByPgferrysPrefixIsReported(t *testing.T) {
	for _, sql := range []string{
		"execute pgferry_1", "EXECUTE PGFERRY_1", "Execute PgFerry_1 (1, 'x')", `execute "pgferry_1"`,
		"execute/**/pgferry_1", "execute -- c\n pgferry_1;", "execute pgferry_1 ;  ", "/* x */ execute pgferry_1",
		`execute U&"pgferry\005f1"`, `execute u&"\0070gferry_1"`, `execute U&"pgferry!005f1" UESCAPE '!'`,
		"execute pgferry_" + strings.Repeat("x", 70), `execute "pgferry_1"""`,
		"explain execute pgferry_1", "EXPLAIN ANALYZE EXECUTE pgferry_1", "explain analyze verbose execute pgferry_1",
		"explain (analyze, format 'json') execute pgferry_1", "explain create table t as execute pgferry_1",
		"create table t as execute pgferry_1", "CREATE TEMP TABLE t AS EXECUTE pgferry_1",
		"create table if not exists t (a) as execute pgferry_1 with no data", "create materialized view v as execute pgferry_1",
		"deallocate pgferry_1", "DEALLOCATE PREPARE PGFERRY_1", `deallocate "pgferry_1"`, `deallocate prepare "pgferry_noop"`,
		"prepare pgferry_7 as select 1", "PREPARE PGFERRY_7 (int) AS SELECT $1", `prepare "pgferry_7" as select 1`,
		"select 1; execute pgferry_1", "execute pgferry_1; select 1", "deallocate all; deallocate pgferry_1",
		"select 1; prepare pgferry_7 as select 2", "set search_path to a; explain execute pgferry_1",
	} {
		if !Needed([]byte(sql)) {
			t.Errorf("Needed(%q) = false; want it classified", sql)
		}
		if c := SQL([]byte(sql)); !c.ReservedName {
			t.Errorf("SQL(%q) = %+v; want the name reported as pgferry's", sql, c)
		}
	}
}

// What reads otherwise with standard_conforming_strings off pins, and the
// reserved name one reading sees is reported too: the reading the server
// uses may be that one.
func TestAReservedNameOnlyOneReadingOfBackslashesSeesIsReported(t *testing.T) {
	for _, sql := range []string{`select '\'; execute pgferry_1; --'`, `select 'a\'; deallocate pgferry_1; --'`} {
		if c := SQL([]byte(sql)); !c.ReservedName || c.Pin != pinStringEscapes {
			t.Errorf("SQL(%q) = %+v; want it pinned (%s) and the name reported as pgferry's", sql, c, pinStringEscapes)
		}
	}
}

// Names that only look alike, and statements that name no prepared
// statement, are not reported, and those that were classified before are
// classified as before.
func TestANameThatIsNotPgferrysOrNamesNoPreparedStatementIsNotReported(t *testing.T) {
	for _, sql := range []string{
		"execute p", "execute p(1)", "execute pgferry1", `execute "PGFERRY_1"`, `execute "pgferry"`, "execute pg_ferry_1",
		"execute my_pgferry_1", `execute U&"p\0067ferry"`, "executepgferry_1", "explain select 1",
		"explain select pgferry_1 from t", "create table pgferry_1 (x int)", "create table t as select 1",
		"deallocate all", "deallocate prepare all", "deallocate p", "prepare p as select 1",
		"select * from pgferry_stats", "select 'execute pgferry_1'", "insert into t values ('deallocate pgferry_1')",
	} {
		if c := SQL([]byte(sql)); c.ReservedName {
			t.Errorf("SQL(%q) = %+v; want no reserved name", sql, c)
		}
	}
	if c := SQL([]byte("prepare p as select 1")); c.Pin != "SQL PREPARE" {
		t.Errorf("SQL(prepare p) = %+v; want it pinned as before", c)
	}
	if c := SQL([]byte("deallocate prepare all")); !c.Discard {
		t.Errorf("SQL(deallocate prepare all) = %+v; want a discard as before", c)
	}
}

// EXECUTE and EXPLAIN of anything else stay off the slow path, without
// allocating: only a text that holds the prefix (or a '&', which a name
// with Unicode escapes needs) is classified.
func TestOrdinaryExecuteAndExplainAreNotClassified(t *testing.T) {
	for _, sql := range []string{"execute get_user(1)", "EXECUTE p", "explain analyze select * from t where a_b = 1",
		"execute p('pgferry'); ", "explain select pgferry from t"} {
		b := []byte(sql)
		if Needed(b) {
			t.Errorf("Needed(%q) = true; want the statement skipped", sql)
		}
		if n := testing.AllocsPerRun(100, func() { classifyHot(b) }); n != 0 {
			t.Errorf("%q: %.1f allocs, want 0", sql, n)
		}
	}
}

func BenchmarkClassifyExecute(b *testing.B) {
	benchClassify(b, []byte("EXECUTE get_account_balance(48857, 'checking');"))
}
