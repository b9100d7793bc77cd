package router_test

// End-to-end tests of clients' prepared statements on shared server
// connections in pipelines: several statements before one Sync, errors in
// the middle of one, Flush without Sync, statements dropped by SQL and a
// server lost on the way. Each runs two or more raw clients through a pool
// of one server connection, so that they share it.

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// clientsOnOneServer starts pgferry with a database of its own whose pool
// has one server connection and caches maxPrepared statements on it, and
// returns n raw clients, which take turns on that connection, and the
// server database's name.
func clientsOnOneServer(t *testing.T, maxPrepared, n int) ([]*rawClient, string) {
	t.Helper()
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.MaxPreparedStatements = maxPrepared
	f := ferrytest.Start(t, cfg)
	cs := make([]*rawClient, n)
	for i := range cs {
		cs[i] = newRawClient(t, f.AppDSN())
	}
	return cs, db
}

// want sends msgs and checks the transcript up to the syncs-th
// ReadyForQuery (see rawClient.until).
func (c *rawClient) want(what string, syncs int, want string, msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	c.send(msgs...)
	if got := c.until(syncs); got != want {
		c.t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// next reads n responses, not counting ParameterStatus and notices, for
// requests that end in a Flush rather than a Sync; the transcript is
// until's.
func (c *rawClient) next(n int) string {
	return c.transcript(func(string) bool { n--; return n > 0 })
}

// Ways pgferryStatements renders a statement: by its name, or as
// name@prepare_time (a statement prepared again shows a new time).
const (
	byName         = "name"
	byNameWithTime = "name || '@' || prepare_time::text"
)

// pgferryStatements returns pgferry's statements on the server connection
// c is linked to for a simple query, in name order, comma-separated, each
// rendered by the SQL expression each over pg_prepared_statements (byName,
// byNameWithTime).
func (c *rawClient) pgferryStatements(each string) string {
	c.t.Helper()
	c.send(&pgproto3.Query{String: "select coalesce(string_agg(" + each + ", ',' order by name), '') from pg_prepared_statements where name like 'pgferry%'"})
	got := c.until(1)
	names, ok := strings.CutPrefix(got, "T D:")
	if !ok {
		c.t.Fatalf("statements on the server: %q", got)
	}
	return strings.TrimSuffix(names, " C Z")
}

func closeStmt(name string) *pgproto3.Close { return &pgproto3.Close{ObjectType: 'S', Name: name} }
func describeStmt(name string) *pgproto3.Describe {
	return &pgproto3.Describe{ObjectType: 'S', Name: name}
}
func flushMsg() *pgproto3.Flush { return &pgproto3.Flush{} }

func TestAStatementEvictedInAPipelineThatFailedStaysUsable(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 2, 2)
	c, other := cs[0], cs[1]
	c.want("prepare a and b", 1, "1 1 Z", parse("a", "select 'a'"), parse("b", "select 'b'"), syncMsg())
	// The cache is full: preparing c closes a first. An error earlier in
	// the pipeline makes the server skip that Close, and c's Parse.
	c.want("the failing pipeline", 1, "E:26000 Z", bind("nope"), execMsg(), parse("c", "select 'c'"), syncMsg())
	for round := range 3 {
		c.want("bind a", 1, "2 D:a C Z", bind("a"), execMsg(), syncMsg())
		c.want("bind b", 1, "2 D:b C Z", bind("b"), execMsg(), syncMsg())
		// Another client with the same text: the same server statement.
		other.want("other prepares a's text", 1, "1 2 D:a C 3 Z", parse("x", "select 'a'"), bind("x"), execMsg(), closeStmt("x"), syncMsg())
		_ = round
	}
	// (c's Parse never happened: as PostgreSQL, pgferry answers a Bind of
	// c with 26000.)
	c.want("bind c", 1, "E:26000 Z", bind("c"), execMsg(), syncMsg())
	c.want("bind a again", 1, "2 D:a C Z", bind("a"), execMsg(), syncMsg())
	if n := strings.Count(c.pgferryStatements(byName), ",") + 1; n > 2 {
		t.Fatalf("%d statements on the server, over max_prepared_statements = 2", n)
	}
}

func TestEveryStatementOfAPipelineLongerThanTheCacheRuns(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 2, 2)
	c, other := cs[0], cs[1]
	var msgs []pgproto3.FrontendMessage
	var want []string
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		msgs = append(msgs, parse(s, "select '"+s+"'"))
		want = append(want, "1")
	}
	for _, s := range []string{"a", "e", "b", "d", "c", "a", "a", "e"} {
		msgs = append(msgs, describeStmt(s), bind(s), execMsg())
		want = append(want, "t T 2 D:"+s+" C")
	}
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		msgs = append(msgs, closeStmt(s)) // (the next round prepares them again)
		want = append(want, "3")
	}
	msgs = append(msgs, syncMsg())
	for round := range 3 {
		c.want("the pipeline", 1, strings.Join(want, " ")+" Z", msgs...)
		other.want("another client's statement in between", 1, "1 2 D:o C 3 Z", parse("o", "select 'o'"), bind("o"), execMsg(), closeStmt("o"), syncMsg())
		_ = round
	}
	if n := strings.Count(c.pgferryStatements(byName), ",") + 1; n > 2 {
		t.Fatalf("%d statements on the server, over max_prepared_statements = 2", n)
	}
}

// pipelinedDrops are the ways a client drops every prepared statement of
// its server in a pipeline, each with its answer.
var pipelinedDrops = []struct {
	name string
	msgs []pgproto3.FrontendMessage
	want string
}{
	{"deallocate all by Execute", []pgproto3.FrontendMessage{parse("d", "deallocate all"), bind("d"), execMsg()}, "1 2 C"},
	{"discard all by Execute", []pgproto3.FrontendMessage{parse("d", "discard all"), bind("d"), execMsg()}, "1 2 C"},
	{"deallocate all by simple query", []pgproto3.FrontendMessage{&pgproto3.Query{String: "deallocate all"}}, "C Z"},
	{"discard all by simple query", []pgproto3.FrontendMessage{&pgproto3.Query{String: "discard all"}}, "C Z"},
}

// dropThen sends a pipeline of drop and then msgs up to a Sync and checks
// the answers to msgs.
func (c *rawClient) dropThen(drop int, want string, msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	d := pipelinedDrops[drop]
	syncs := 1
	if strings.HasSuffix(d.want, "Z") {
		syncs = 2
	}
	c.want("drop, then prepare", syncs, d.want+" "+want, append(append([]pgproto3.FrontendMessage{}, d.msgs...), msgs...)...)
}

func TestAStatementPreparedRightAfterAPipelinedDeallocateAllStaysUsable(t *testing.T) {
	t.Parallel()
	for i, d := range pipelinedDrops {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			cs, _ := clientsOnOneServer(t, 10, 2)
			c, other := cs[0], cs[1]
			c.dropThen(i, "1 2 D:t C Z", parse("t", "select 't'"), bind("t"), execMsg(), syncMsg())
			for round := range 2 {
				c.want("bind t later", 1, "2 D:t C Z", bind("t"), execMsg(), syncMsg())
				other.want("other prepares t's text", 1, "1 2 D:t C 3 Z", parse("x", "select 't'"), bind("x"), execMsg(), closeStmt("x"), syncMsg())
				_ = round
			}
		})
	}
}

func TestAStatementTheServerHadPreparedAgainInAPipelineAfterDeallocateAllRuns(t *testing.T) {
	t.Parallel()
	for i, d := range pipelinedDrops {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			cs, _ := clientsOnOneServer(t, 10, 2)
			c, other := cs[0], cs[1]
			// other keeps "select 's'" registered, so c's Parse of the same
			// text after the drop is the statement the server had.
			other.want("other prepares", 1, "1 Z", parse("s", "select 's'"), syncMsg())
			c.dropThen(i, "1 2 D:s C Z", parse("s", "select 's'"), bind("s"), execMsg(), syncMsg())
			for round := range 2 {
				c.want("bind s later", 1, "2 D:s C Z", bind("s"), execMsg(), syncMsg())
				other.want("other binds s", 1, "2 D:s C Z", bind("s"), execMsg(), syncMsg())
				_ = round
			}
		})
	}
}

func TestDeallocateAllAndDiscardAllForgetTheClientsStatementsOnly(t *testing.T) {
	t.Parallel()
	for _, drop := range []string{"deallocate all", "discard all"} {
		t.Run(drop, func(t *testing.T) {
			t.Parallel()
			cs, _ := clientsOnOneServer(t, 10, 2)
			c, other := cs[0], cs[1]
			other.want("other prepares", 1, "1 2 D:s C Z", parse("s", "select 's'"), bind("s"), execMsg(), syncMsg())
			c.want("c prepares", 1, "1 2 D:s C Z", parse("s", "select 's'"), bind("s"), execMsg(), syncMsg())
			c.want("simple-query "+drop, 1, "C Z", &pgproto3.Query{String: drop})
			c.want("c's statement is gone", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
			other.want("other's is not", 1, "2 D:s C Z", bind("s"), execMsg(), syncMsg())
			// (DISCARD ALL runs only as the first statement of its
			// transaction: a Sync of its own.)
			c.want("by Execute", 2, "1 2 D:s C Z 1 2 C Z", parse("s", "select 's'"), bind("s"), execMsg(), syncMsg(), parse("d", drop), bind("d"), execMsg(), syncMsg())
			c.want("c's statements are gone", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
			c.want("d too", 1, "E:26000 Z", bind("d"), execMsg(), syncMsg())
			other.want("other's is not", 1, "2 D:s C Z", bind("s"), execMsg(), syncMsg())
		})
	}
}

func TestAStatementClosedAndPreparedAgainInOnePipelineRunsTheNewText(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 10, 2)
	c, other := cs[0], cs[1]
	c.want("prepare", 1, "1 2 D:1 C Z", parse("s", "select 1"), bind("s"), execMsg(), syncMsg())
	other.want("other prepares the old text", 1, "1 Z", parse("s", "select 1"), syncMsg())
	c.want("close, prepare again, run", 1, "2 D:1 C 3 1 2 D:2 C Z",
		bind("s"), execMsg(), closeStmt("s"), parse("s", "select 2"), bind("s"), execMsg(), syncMsg())
	c.want("close alone, prepare again", 2, "3 Z 1 2 D:3 C Z",
		closeStmt("s"), syncMsg(), parse("s", "select 3"), bind("s"), execMsg(), syncMsg())
	other.want("other's statement", 1, "2 D:1 C Z", bind("s"), execMsg(), syncMsg())
	c.want("closed", 1, "3 E:26000 Z", closeStmt("s"), bind("s"), execMsg(), syncMsg())
}

func TestRequestsEndingInFlushKeepTheirServerUntilSync(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 10, 2)
	c, other := cs[0], cs[1]
	for round := range 3 {
		// pgx's and JDBC's describe first, then bind.
		c.send(parse("f", "select 'f'"), describeStmt("f"), flushMsg())
		if got := c.next(3); got != "1 t T" {
			t.Fatalf("round %d, named Parse and Describe: %q", round, got)
		}
		c.want("named Bind after Flush", 1, "2 D:f C 3 Z", bind("f"), execMsg(), closeStmt("f"), syncMsg()) // (closed: the next round prepares it again)
		c.send(parse("", "select 'u'"), describeStmt(""), flushMsg())
		if got := c.next(3); got != "1 t T" {
			t.Fatalf("round %d, unnamed Parse and Describe: %q", round, got)
		}
		// Meanwhile another client's unnamed statement waits for the server.
		done := make(chan string, 1)
		go func() {
			other.send(parse("", "select 'other'"), bind(""), execMsg(), syncMsg())
			done <- other.until(1)
		}()
		c.want("unnamed Bind after Flush", 1, "2 D:u C Z", bind(""), execMsg(), syncMsg())
		if got := <-done; got != "1 2 D:other C Z" {
			t.Fatalf("round %d, the other client: %q", round, got)
		}
		// A row limit: the portal is suspended, and resumed after a Flush.
		c.send(parse("", "select generate_series(1, 3)::text"), bind(""), &pgproto3.Execute{MaxRows: 2}, flushMsg())
		if got := c.next(5); got != "1 2 D:1 D:2 s" {
			t.Fatalf("round %d, the first two rows: %q", round, got)
		}
		c.want("the rest", 1, "D:3 C Z", &pgproto3.Execute{MaxRows: 2}, syncMsg())
		c.want("describe the portal", 1, "1 2 T D:x C 3 Z", parse("p", "select 'x'"), bind("p"), &pgproto3.Describe{ObjectType: 'P'}, execMsg(), closeStmt("p"), syncMsg())
	}
}

func TestStatementsRunOnTheNextServerAfterTheirServerIsLostMidPipeline(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cs, db := clientsOnOneServer(t, 10, 2)
	c, other := cs[0], cs[1]
	c.want("prepare", 1, "1 2 D:k C Z", parse("k", "select 'k'"), bind("k"), execMsg(), syncMsg())
	c.send(parse("", "select 'unnamed'"), syncMsg(), parse("z", "select pg_sleep(60)::text"), bind("z"), execMsg(),
		parse("y", "select 'y'"), bind("y"), execMsg(), syncMsg())
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)::text'")
	if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)::text'", db); err != nil {
		t.Fatal(err)
	}
	got := c.until(2)
	if !strings.HasPrefix(got, "1 Z 1 2 E:") || !strings.HasSuffix(got, " Z") {
		t.Fatalf("the pipeline whose server was lost: %q", got)
	}
	for round := range 2 {
		c.want("k on the next server", 1, "2 D:k C Z", bind("k"), execMsg(), syncMsg())
		// (y's Parse went behind the query the loss cut, in its group:
		// skipped, as PostgreSQL skips after an error, y is not the
		// client's.)
		c.want("y on the next server", 1, "E:26000 Z", bind("y"), execMsg(), syncMsg())
		c.want("the unnamed statement on the next server", 1, "2 D:unnamed C Z", bind(""), execMsg(), syncMsg())
		other.want("another client", 1, "1 2 D:k C 3 Z", parse("k", "select 'k'"), bind("k"), execMsg(), closeStmt("k"), syncMsg())
		_ = round
	}
}
func TestAClientCannotRunAnotherClientsStatementByPgferrysNameForIt(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 10, 2)
	a, b := cs[0], cs[1]
	a.want("a prepares", 1, "1 2 D:a's secret C Z", parse("s", "select 'a''s secret'"), bind("s"), execMsg(), syncMsg())
	name := a.pgferryStatements(byName)
	if !strings.HasPrefix(name, "pgferry_") || strings.Contains(name, ",") {
		t.Fatalf("server statements: %q", name)
	}
	// b never prepared a statement of that name: PostgreSQL would say so.
	b.want("b binds pgferry's name", 1, "E:26000 Z", bind(name), execMsg(), syncMsg())
	b.want("b describes pgferry's name", 1, "E:26000 Z", describeStmt(name), syncMsg())
	b.want("b binds the throwaway name", 1, "E:26000 Z", bind("pgferry_noop"), execMsg(), syncMsg())
	// a's own statement is untouched, and b may name its own so.
	a.want("a binds its own", 1, "2 D:a's secret C Z", bind("s"), execMsg(), syncMsg())
	b.want("b's own pgferry_ name", 1, "1 2 D:b C Z", parse(name, "select 'b'"), bind(name), execMsg(), syncMsg())
}

func TestAStatementDeallocatedBehindPgferrysBackIsPreparedAgainAfterOneError(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Bind", "Describe"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			cs, _ := clientsOnOneServer(t, 10, 2)
			a, b := cs[0], cs[1]
			a.want("a prepares", 1, "1 2 D:a C Z", parse("s", "select 'a'"), bind("s"), execMsg(), syncMsg())
			name := a.pgferryStatements(byName)
			// b drops it by pgferry's name (PostgreSQL would have told b
			// it has no such statement): the one error that a then gets is
			// the server's, and the statement is prepared again after it.
			// (pgferry refuses a DEALLOCATE of its names; SQL a DO block
			// runs, it does not see.)
			b.want("b deallocates "+name, 1, "C Z", &pgproto3.Query{String: "do $$begin execute 'deallocate " + name + "'; end$$"})
			first := []pgproto3.FrontendMessage{bind("s"), execMsg(), syncMsg()}
			if how == "Describe" {
				first = []pgproto3.FrontendMessage{describeStmt("s"), syncMsg()}
			}
			a.send(first...)
			if got := a.until(1); !strings.HasPrefix(got, "E:26000") {
				t.Logf("the first %s after the drop: %q", how, got)
			}
			for round := range 3 {
				a.want("a binds again", 1, "2 D:a C Z", bind("s"), execMsg(), syncMsg())
				a.want("a describes", 1, "t T Z", describeStmt("s"), syncMsg())
				_ = round
			}
		})
	}
}

func TestTheUnnamedStatementBoundAloneOnAnotherServerIsTheClientsOwn(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	c, o1, o2 := newRawClient(t, f.AppDSN()), newRawClient(t, f.AppDSN()), newRawClient(t, f.AppDSN())
	pidOf := func(transcript string) string {
		t.Helper()
		for _, f := range strings.Fields(transcript) {
			if pid, ok := strings.CutPrefix(f, "D:"); ok {
				return pid
			}
		}
		t.Fatalf("no pid in %q", transcript)
		return ""
	}
	for round, describeFirst := range []bool{false, true, false, true} {
		// The statement answers with its server's pid, and what it was
		// given: whichever server runs it says so.
		sql := "select pg_backend_pid()::text || ':' || $1::text"
		c.send(parse("", sql), bind("", "mine"), execMsg(), syncMsg())
		got := c.until(1)
		a, _, _ := strings.Cut(pidOf(got), ":")
		// Both servers busy, in transactions; the one that is not a
		// ends its transaction and is the one free for c.
		o1.send(&pgproto3.Query{String: "begin; select pg_backend_pid()::text"})
		p1 := pidOf(o1.until(1))
		o2.send(&pgproto3.Query{String: "begin; select pg_backend_pid()::text"})
		p2 := pidOf(o2.until(1))
		// Another client's unnamed statement on the server c gets.
		other, keep := o1, o2
		if p1 == a {
			other, keep = o2, o1
		}
		other.want("another client's unnamed statement", 1, "1 2 D:theirs C Z", parse("", "select 'theirs'"), bind(""), execMsg(), syncMsg())
		// (A COMMIT by simple query would end that statement.)
		other.want("commit", 1, "1 2 C 3 Z", parse("cm", "commit"), bind("cm"), execMsg(), closeStmt("cm"), syncMsg())
		var msgs []pgproto3.FrontendMessage
		want := "2 D:"
		if describeFirst {
			msgs = append(msgs, describeStmt(""))
			want = "t T 2 D:"
		}
		c.send(append(msgs, bind("", "again"), execMsg(), syncMsg())...)
		got = c.until(1)
		b, arg, _ := strings.Cut(pidOf(got), ":")
		if !strings.HasPrefix(got, want) || arg != "again" || b == a || (b != p1 && b != p2) {
			t.Fatalf("round %d: c's Bind of its unnamed statement alone, on the other server: %q (first server %s, others %s %s)", round, got, a, p1, p2)
		}
		keep.want("commit", 1, "C Z", &pgproto3.Query{String: "commit"})
	}
}
