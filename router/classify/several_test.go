package classify

import (
	"testing"
)

// A query of several statements runs them all: every SET, RESET and
// UNLISTEN in it counts, in order, as if each had come alone.
func TestAQueryOfSeveralStatementsReportsEveryChangeInOrder(t *testing.T) {
	tests := []struct {
		sql  string
		want []Change
		pin  string
	}{
		{"SET work_mem = '1MB'; SET search_path TO a", []Change{{SetName: "work_mem", SetValue: "'1MB'"}, {SetName: "search_path", SetValue: "a", Stmt: 1}}, ""},
		{"SET search_path TO a; RESET statement_timeout; select 1", []Change{{SetName: "search_path", SetValue: "a"}, {SetName: "statement_timeout", Reset: true, Stmt: 1}}, ""},
		{"RESET ALL; SET search_path TO a", []Change{{ResetAll: true}, {SetName: "search_path", SetValue: "a", Stmt: 1}}, ""},
		{"BEGIN; SET LOCAL work_mem = '1MB'; SET search_path TO a; COMMIT", []Change{{SetName: "search_path", SetValue: "a", Stmt: 2}}, ""},
		{"SET search_path TO a; COMMIT;  -- done", []Change{{SetName: "search_path", SetValue: "a"}}, ""},
		{"select 1; UNLISTEN a; UNLISTEN *", []Change{{Unlisten: "a", Stmt: 1}, {UnlistenAll: true, Stmt: 2}}, ""},
		{"SET a.b = 1; select 1; SET c.d = 2; SET e.f = 3", []Change{{SetName: "a.b", SetValue: "1"}, {SetName: "c.d", SetValue: "2", Stmt: 2}, {SetName: "e.f", SetValue: "3", Stmt: 3}}, ""},
		// What PostgreSQL keeps of them in part, each change's place in
		// the query tells (the server's CommandCompletes count them).
		{"SET search_path TO a; COMMIT; select 1/0", []Change{{SetName: "search_path", SetValue: "a"}}, ""},
		{"ROLLBACK; ; /* none */ ; SET search_path TO a", []Change{{SetName: "search_path", SetValue: "a", Stmt: 1}}, ""},
		{"end; /* x */ SET search_path TO a", []Change{{SetName: "search_path", SetValue: "a", Stmt: 1}}, ""},
		{"SET search_path TO a; rollback work to savepoint s", []Change{{SetName: "search_path", SetValue: "a"}, {Savepoint: SavepointRollback, SavepointName: "s", Stmt: 1}}, ""},
		{`BEGIN; SAVEPOINT "S"; SET search_path TO a; RELEASE SAVEPOINT "S"; ROLLBACK TO S; release savepoint; rollback to savepoint`,
			[]Change{{Savepoint: SavepointDefine, SavepointName: "S", Stmt: 1}, {SetName: "search_path", SetValue: "a", Stmt: 2},
				{Savepoint: SavepointRelease, SavepointName: "S", Stmt: 3}, {Savepoint: SavepointRollback, SavepointName: "s", Stmt: 4},
				{Savepoint: SavepointRelease, SavepointName: "savepoint", Stmt: 5}, {Savepoint: SavepointRollback, SavepointName: "savepoint", Stmt: 6}}, ""},
		{`SAVEPOINT U&"s\0041"; SAVEPOINT s x; ROLLBACK TRANSACTION TO SAVEPOINT s`,
			[]Change{{Savepoint: SavepointDefine, SavepointName: "sA"}, {Savepoint: SavepointDefine, Stmt: 1}, {Savepoint: SavepointRollback, SavepointName: "s", Stmt: 2}}, ""},
		// A statement the split cuts in pieces makes the places of those
		// after it uncertain: a SET or savepoint there pins.
		{"CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); SET search_path TO a; ROLLBACK",
			[]Change{{SetName: "search_path", SetValue: "a", Stmt: 2}}, pinUncounted},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SAVEPOINT s",
			[]Change{{Savepoint: SavepointDefine, SavepointName: "s", Stmt: 3}}, pinUncounted},
		{"SET search_path TO a; CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; ROLLBACK",
			[]Change{{SetName: "search_path", SetValue: "a"}}, ""},
		{"select (1); SET search_path TO a", []Change{{SetName: "search_path", SetValue: "a", Stmt: 1}}, ""},
		{"select 1; LISTEN a", nil, pinListenInSeveral},
		{"LISTEN a; select 1", nil, pinListenInSeveral},
	}
	for _, tc := range tests {
		c := SQL([]byte(tc.sql))
		var got []Change
		for i := range c.Changes() {
			got = append(got, *c.ChangeAt(i))
		}
		if len(got) != len(tc.want) {
			t.Errorf("SQL(%q) reports changes %+v; want %+v", tc.sql, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("SQL(%q) change %d is %+v; want %+v", tc.sql, i, got[i], tc.want[i])
			}
		}
		if c.Pin != tc.pin || !c.Several || c.Listen != "" {
			t.Errorf("SQL(%q) = %+v; want pin %q, several statements, no LISTEN served", tc.sql, c, tc.pin)
		}
	}
}

// One statement is classified without allocating, however it ends.
func TestAStatementAloneIsNotSeveral(t *testing.T) {
	for _, sql := range []string{"SET search_path TO a", "SET search_path TO a;", "SET search_path TO a ; -- x", "UNLISTEN a; /* */"} {
		if c := SQL([]byte(sql)); c.Several || c.More != nil || c.Changes() != 1 {
			t.Errorf("SQL(%q) = %+v; want one statement, one change", sql, c)
		}
	}
	if c := SQL([]byte("LISTEN a ;")); c.Several || c.Listen != "a" {
		t.Errorf("SQL(LISTEN a) = %+v; want one statement, LISTEN a", c)
	}
	if n := testing.AllocsPerRun(100, func() { benchSink = SQL([]byte("COMMIT; ")) }); n != 0 {
		t.Errorf("COMMIT: %.1f allocs, want 0", n)
	}
}

// A savepoint statement is one change, which changes nothing by itself
// (ChangesState is false: a client with no SET pending records nothing
// of it), and Savepoint tells one by its first word.
func TestASavepointStatementAloneChangesNoStateByItself(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want Change
	}{
		{"SAVEPOINT a", Change{Savepoint: SavepointDefine, SavepointName: "a"}},
		{"release a;", Change{Savepoint: SavepointRelease, SavepointName: "a"}},
		{"Rollback To Savepoint A ", Change{Savepoint: SavepointRollback, SavepointName: "a"}},
		{"ROLLBACK", Change{}},
	} {
		c := SQL([]byte(tc.sql))
		if c.Change != tc.want || c.ChangesState() || c.Pin != "" || !Savepoint([]byte(tc.sql)) {
			t.Errorf("SQL(%q) = %+v, ChangesState %v, Savepoint %v; want change %+v, no state by itself, a savepoint statement",
				tc.sql, c, c.ChangesState(), Savepoint([]byte(tc.sql)), tc.want)
		}
	}
	for _, sql := range []string{"releases", "select 1", "rollbacks", ""} {
		if Savepoint([]byte(sql)) {
			t.Errorf("Savepoint(%q) = true; want false", sql)
		}
	}
}
