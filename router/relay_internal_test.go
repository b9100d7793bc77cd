package router

import (
	"io"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

func TestBindOfAKnownStatementDoesNotAllocate(t *testing.T) {
	srv := &Server{stmts: prepared.NewRegistry(nil)}
	srv.cfg.Store(configs.Default())
	ss := &session{srv: srv, entry: &poolEntry{}}
	st := ss.holdStmt("s1", []byte("select $1::int\x00\x00\x00"))
	sc := &pool.ServerConn{Wr: protocol.NewWriter(io.Discard)}
	sc.Stmts.Add(st.ID)
	frame := []byte{'B', 0, 0, 0, 0}
	frame = append(frame, "\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x0142\x00\x00"...)
	frame[4] = byte(len(frame) - 1)
	exec := []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0}
	sync := []byte{'S', 0, 0, 0, 4}
	// Warm up the expectation ring and the write buffer.
	for i := 0; i < 10; i++ {
		ss.process(sc, 'B', frame)
		ss.process(sc, 'E', exec)
		ss.process(sc, 'S', sync)
		ss.q.clear()
		sc.Wr.Flush()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		ss.process(sc, 'B', frame)
		ss.process(sc, 'E', exec)
		ss.process(sc, 'S', sync)
		ss.q.clear()
		sc.Wr.Flush()
	})
	if allocs != 0 {
		t.Fatalf("Bind/Execute/Sync of a known statement allocated %.1f times, want 0", allocs)
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
			c := classifySQL([]byte(tc.sql))
			if (c.pin != "") != tc.pin || c.setName != tc.set || c.discard != tc.disc {
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
		classifySQL([]byte(sql))
		needsClassify([]byte(sql))
	})
}

func TestParameterSetKeysDifferWheneverTheSetsDiffer(t *testing.T) {
	keys := []string{"search_path", "statement_timeout"}
	sets := []paramList{
		nil,
		{{"search_path", ""}},
		{{"search_path", "a"}},
		{{"search_path", "a\x01statement_timeout"}},
		{{"search_path", "a"}, {"statement_timeout", ""}},
		{{"search_path", "a"}, {"statement_timeout", "1"}},
		{{"statement_timeout", "1"}},
	}
	seen := map[string]int{}
	for i, p := range sets {
		ss := &session{paramKeys: keys, params: p}
		k := ss.paramSetKey()
		if j, dup := seen[k]; dup {
			t.Fatalf("sets %v and %v share the key %q", sets[j], p, k)
		}
		seen[k] = i
		if again := (&session{paramKeys: keys, params: append(paramList(nil), p...)}).paramSetKey(); again != k {
			t.Fatalf("equal sets %v got different keys", p)
		}
	}
}
