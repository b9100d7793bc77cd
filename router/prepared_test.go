package router_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// rawClient speaks the extended protocol by hand through pgferry.
type rawClient struct {
	t  *testing.T
	pc *pgconn.PgConn
	fe *pgproto3.Frontend
}

func newRawClient(t *testing.T, dsn string) *rawClient {
	t.Helper()
	pc := ferrytest.ConnectPgConn(t, context.Background(), dsn)
	return &rawClient{t: t, pc: pc, fe: pc.Frontend()}
}

func (c *rawClient) send(msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// until reads responses up to and including the n-th ReadyForQuery and
// returns a compact transcript: message names, errors as "E:<code>", data
// rows as "D:<first column>" (see word).
func (c *rawClient) until(n int) string {
	return c.transcript(func(word string) bool {
		if word == "Z" {
			n--
		}
		return n > 0
	})
}

// transcript reads responses, not counting ParameterStatus and notices,
// while more says to go on after each, and returns their words.
func (c *rawClient) transcript(more func(word string) bool) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("receive after %v: %v", out, err)
		}
		w := word(msg)
		if w == "" {
			continue
		}
		out = append(out, w)
		if !more(w) {
			return strings.Join(out, " ")
		}
	}
}

// word names a response in a transcript: "1" ParseComplete, "2"
// BindComplete, "3" CloseComplete, "t" ParameterDescription, "T"
// RowDescription, "n" NoData, "D:<first column>" a DataRow, "C"
// CommandComplete, "s" PortalSuspended, "E:<code>" an error, "Z"
// ReadyForQuery, "G" CopyInResponse; "" for ParameterStatus and notices,
// which it skips.
func word(msg pgproto3.BackendMessage) string {
	switch m := msg.(type) {
	case *pgproto3.ParseComplete:
		return "1"
	case *pgproto3.BindComplete:
		return "2"
	case *pgproto3.CloseComplete:
		return "3"
	case *pgproto3.ParameterDescription:
		return "t"
	case *pgproto3.RowDescription:
		return "T"
	case *pgproto3.NoData:
		return "n"
	case *pgproto3.DataRow:
		return "D:" + string(m.Values[0])
	case *pgproto3.CommandComplete:
		return "C"
	case *pgproto3.PortalSuspended:
		return "s"
	case *pgproto3.ErrorResponse:
		return "E:" + m.Code
	case *pgproto3.ReadyForQuery:
		return "Z"
	case *pgproto3.CopyInResponse:
		return "G"
	case *pgproto3.ParameterStatus, *pgproto3.NoticeResponse:
		return ""
	default:
		return fmt.Sprintf("%T", m)
	}
}

func parse(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }
func bind(name string, args ...string) *pgproto3.Bind {
	b := &pgproto3.Bind{PreparedStatement: name}
	for _, a := range args {
		b.Parameters = append(b.Parameters, []byte(a))
	}
	return b
}
func execMsg() *pgproto3.Execute { return &pgproto3.Execute{} }
func syncMsg() *pgproto3.Sync    { return &pgproto3.Sync{} }

// keepServersBusy runs short transactions from other clients so the raw
// client's consecutive transactions land on different server connections.
func keepServersBusy(t *testing.T, dsn string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return
			}
			defer c.Close(context.Background())
			for ctx.Err() == nil {
				c.Exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// twoClientsOnOneServer starts pgferry with a database of its own whose
// pool has one server connection, so the two raw clients it returns take
// turns on the same one.
func twoClientsOnOneServer(t *testing.T) (a, b *rawClient) {
	t.Helper()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	return newRawClient(t, f.AppDSN()), newRawClient(t, f.AppDSN())
}

func TestNamedStatementsSurviveChangingServerConnections(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 3)
	cfg.MaxPreparedStatements = 3
	f := ferrytest.Start(t, cfg)
	stop := keepServersBusy(t, f.AppDSN())
	defer stop()
	c := newRawClient(t, f.AppDSN())

	tests := []struct {
		name  string
		msgs  []pgproto3.FrontendMessage
		syncs int
		want  string
	}{
		{"prepare and run", []pgproto3.FrontendMessage{parse("s1", "select 1"), syncMsg(), bind("s1"), execMsg(), syncMsg()}, 2,
			"1 Z 2 D:1 C Z"},
		{"a name closed is free for another query", []pgproto3.FrontendMessage{parse("s1", "select 2"), bind("s1"), execMsg(), syncMsg()}, 1,
			"1 2 D:2 C Z"},
		{"close then parse again", []pgproto3.FrontendMessage{&pgproto3.Close{ObjectType: 'S', Name: "s1"}, syncMsg(), parse("s1", "select 3"), bind("s1"), execMsg(), syncMsg()}, 2,
			"3 Z 1 2 D:3 C Z"},
		{"describe before bind", []pgproto3.FrontendMessage{parse("s2", "select $1::int + 1"), syncMsg(),
			&pgproto3.Describe{ObjectType: 'S', Name: "s2"}, syncMsg(), bind("s2", "41"), execMsg(), syncMsg()}, 3,
			"1 Z t T Z 2 D:42 C Z"},
		{"pipelined statements with several syncs", []pgproto3.FrontendMessage{parse("p1", "select 'a'"), bind("p1"), execMsg(), syncMsg(),
			parse("p2", "select 'b'"), bind("p2"), execMsg(), syncMsg(), bind("p1"), execMsg(), bind("p2"), execMsg(), syncMsg()}, 3,
			"1 2 D:a C Z 1 2 D:b C Z 2 D:a C 2 D:b C Z"},
		{"eviction at the limit keeps every statement usable", []pgproto3.FrontendMessage{
			parse("e1", "select 'e1'"), parse("e2", "select 'e2'"), parse("e3", "select 'e3'"), parse("e4", "select 'e4'"), parse("e5", "select 'e5'"), syncMsg(),
			bind("e1"), execMsg(), bind("e5"), execMsg(), bind("e2"), execMsg(), bind("e4"), execMsg(), bind("e3"), execMsg(), syncMsg()}, 2,
			"1 1 1 1 1 Z 2 D:e1 C 2 D:e5 C 2 D:e2 C 2 D:e4 C 2 D:e3 C Z"},
		{"an unknown statement gets the server's own error", []pgproto3.FrontendMessage{bind("nope"), execMsg(), syncMsg()}, 1,
			"E:26000 Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			// Several rounds: each lands on whichever server is free.
			for round := 0; round < 5; round++ {
				c.send(tc.msgs...)
				if got := c.until(tc.syncs); got != tc.want {
					t.Fatalf("round %d: got %q, want %q", round, got, tc.want)
				}
				// Closed, as PostgreSQL refuses a Parse of a name it has
				// (42P05).
				closes, want := []pgproto3.FrontendMessage{}, ""
				for _, m := range tc.msgs {
					if p, ok := m.(*pgproto3.Parse); ok && p.Name != "" {
						closes, want = append(closes, closeStmt(p.Name)), want+"3 "
					}
				}
				if len(closes) > 0 {
					c.want("close", 1, want+"Z", append(closes, syncMsg())...)
				}
			}
		})
	}
}

func TestErrorInAnInjectedParseReachesTheClientAsItsOwnMessagesError(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	admin := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := admin.Exec(ctx, "create table if not exists inj (x int); truncate inj; insert into inj values (7)"); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.AppDSN())
	c.send(parse("q", "select x from inj"), bind("q"), execMsg(), syncMsg())
	if got := c.until(1); got != "1 2 D:7 C Z" {
		t.Fatalf("got %q", got)
	}
	// Drop the table: servers that lack the statement now fail to prepare
	// it, and the error must arrive where the client's Bind was.
	if _, err := admin.Exec(ctx, "drop table inj"); err != nil {
		t.Fatal(err)
	}
	stop := keepServersBusy(t, f.AppDSN())
	sawInjectedError := false
	for i := 0; i < 20; i++ {
		c.send(bind("q"), execMsg(), syncMsg())
		got := c.until(1)
		switch got {
		case "E:42P01 Z": // injected Parse failed: relation does not exist
			sawInjectedError = true
		case "E:0A000 Z", "E:42P01 Z 2": // plan invalid on a server that had it
		default:
			if !strings.HasPrefix(got, "E:") {
				t.Fatalf("round %d: got %q after the table was dropped", i, got)
			}
		}
	}
	stop()
	// Recreate the table; the statement works again everywhere.
	if _, err := admin.Exec(ctx, "create table inj (x int); insert into inj values (8)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		// (Closed first: PostgreSQL refuses a Parse of a name it has.)
		c.send(closeStmt("q"), parse("q", "select x from inj"), bind("q"), execMsg(), syncMsg())
		if got := c.until(1); got != "3 1 2 D:8 C Z" && !strings.HasPrefix(got, "3 1 E:0A000") {
			t.Fatalf("after recreate: %q", got)
		}
	}
	if !sawInjectedError {
		t.Log("every round landed on the server that already had the statement")
	}
}

func TestPgxStatementCacheRunsThousandsOfQueriesOverASmallPool(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 5)
	f := ferrytest.Start(t, cfg)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for g := 0; g < 50; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cc, err := pgx.ParseConfig(f.AppDSN())
					if err != nil {
						errs <- err
						return
					}
					cc.DefaultQueryExecMode = mode
					conn, err := pgx.ConnectConfig(ctx, cc)
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close(context.Background())
					for i := 0; i < 60; i++ {
						var a, b int
						if err := conn.QueryRow(ctx, "select $1::int * 2, $2::int", i, g).Scan(&a, &b); err != nil {
							errs <- fmt.Errorf("goroutine %d query %d: %w", g, i, err)
							return
						}
						if a != 2*i || b != g {
							errs <- fmt.Errorf("goroutine %d: wrong result %d,%d", g, a, b)
							return
						}
						var s string
						if err := conn.QueryRow(ctx, "select 'x' || $1::text", fmt.Sprint(g)).Scan(&s); err != nil || s != fmt.Sprint("x", g) {
							errs <- fmt.Errorf("goroutine %d: %q %v", g, s, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestClientsWhoseStatementsHashAlikeEachRunTheirOwnSQL forces every
// statement onto one hash value and has two clients prepare different SQL
// under the same name on a pool of one server connection: each must get
// its own result, never the other's.
func TestClientsWhoseStatementsHashAlikeEachRunTheirOwnSQL(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg, func(o *router.Options) {
		o.StatementHash = func([]byte) uint64 { return 7 }
	})
	a, b := newRawClient(t, f.AppDSN()), newRawClient(t, f.AppDSN())
	for round := 0; round < 5; round++ {
		a.send(parse("s", "select 'a'"), bind("s"), execMsg(), syncMsg())
		if got := a.until(1); got != "1 2 D:a C Z" {
			t.Fatalf("round %d: client a got %q", round, got)
		}
		b.send(parse("s", "select 'b'"), bind("s"), execMsg(), syncMsg())
		if got := b.until(1); got != "1 2 D:b C Z" {
			t.Fatalf("round %d: client b got %q", round, got)
		}
		// Bind alone: the server connection already has both statements.
		a.send(bind("s"), execMsg(), closeStmt("s"), syncMsg()) // (closed: the next round prepares it again)
		if got := a.until(1); got != "2 D:a C 3 Z" {
			t.Fatalf("round %d: client a's Bind got %q", round, got)
		}
		b.send(bind("s"), execMsg(), closeStmt("s"), syncMsg()) // (closed: the next round prepares it again)
		if got := b.until(1); got != "2 D:b C 3 Z" {
			t.Fatalf("round %d: client b's Bind got %q", round, got)
		}
	}
	// Both statements live side by side on the one server connection, each
	// under its own name.
	a.send(&pgproto3.Query{String: "select count(distinct statement) from pg_prepared_statements where name like 'pgferry_%'"})
	if got := a.until(1); got != "T D:2 C Z" {
		t.Fatalf("statements on the server connection: got %q, want two", got)
	}
}

func TestAClientCannotBindTheUnnamedStatementAnotherClientLeftOnTheirSharedServer(t *testing.T) {
	t.Parallel()
	a, b := twoClientsOnOneServer(t)
	a.send(parse("", "select 'client a''s secret'"), &pgproto3.Describe{ObjectType: 'S'}, syncMsg())
	if got := a.until(1); got != "1 t T Z" {
		t.Fatalf("a's Parse and Describe: %s", got)
	}
	// b never parsed an unnamed statement: PostgreSQL would tell it so.
	b.send(bind(""), execMsg(), syncMsg())
	if got := b.until(1); got != "E:26000 Z" {
		t.Fatalf("b's Bind of an unnamed statement it never made: %s, want E:26000 Z", got)
	}
}

func TestTheUnnamedStatementOutlivesItsTransactionAsPostgresKeepsIt(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 3)
	f := ferrytest.Start(t, cfg)
	stop := keepServersBusy(t, f.AppDSN())
	defer stop()
	c := newRawClient(t, f.AppDSN())
	for i := range 30 {
		// pgx's describe-exec mode, libpq's PQprepare with "": the Parse
		// and the Bind in two transactions, most often on two servers.
		sql := fmt.Sprintf("select %d + $1::int", i)
		c.send(parse("", sql), &pgproto3.Describe{ObjectType: 'S'}, syncMsg())
		if got := c.until(1); got != "1 t T Z" {
			t.Fatalf("round %d, Parse and Describe: %s", i, got)
		}
		for j := range 2 { // bound twice: it stays until replaced
			c.send(bind("", "1000"), execMsg(), syncMsg())
			if got, want := c.until(1), fmt.Sprintf("2 D:%d C Z", 1000+i); got != want {
				t.Fatalf("round %d, Bind %d: %s, want %s", i, j, got, want)
			}
		}
	}
	// A simple query ends the unnamed statement, in PostgreSQL's words.
	c.send(&pgproto3.Query{String: "select 1"})
	c.until(1)
	c.send(bind("", "1"), execMsg(), syncMsg())
	if got := c.until(1); got != "E:26000 Z" {
		t.Fatalf("Bind after a simple query: %s, want E:26000 Z", got)
	}
}

func TestAnInjectedCloseSkippedAfterAnErrorLeavesNoClientAnothersUnnamedStatement(t *testing.T) {
	t.Parallel()
	other, c := twoClientsOnOneServer(t)
	other.send(parse("", "select 'the other client''s secret'"), &pgproto3.Describe{ObjectType: 'S'}, syncMsg())
	other.until(1)
	// Named statements only, so no simple query ends the server's unnamed
	// statement: a transaction with a savepoint keeps the server linked.
	run := func(name, sql string) string {
		c.send(parse(name, sql), bind(name), execMsg(), syncMsg())
		return c.until(1)
	}
	if got := run("b", "begin"); got != "1 2 C Z" {
		t.Fatalf("begin: %s", got)
	}
	run("s", "savepoint s")
	// The error makes the server skip the rest up to Sync: the Close
	// pgferry puts before the unnamed Bind too.
	c.send(parse("z", "select 1/0"), bind("z"), execMsg(), bind(""), execMsg(), syncMsg())
	if got := c.until(1); got != "1 E:22012 Z" { // (1/0 fails as it is planned, at Bind)
		t.Fatalf("the failing batch: %s", got)
	}
	run("r", "rollback to savepoint s")
	c.send(bind(""), execMsg(), syncMsg())
	if got := c.until(1); got != "E:26000 Z" {
		t.Fatalf("a Bind of the unnamed statement the client never made, after the skipped batch: %s, want E:26000 Z", got)
	}
	run("e", "rollback")
}

func TestDescribingTheUnnamedStatementInALaterTransactionDescribesTheClients(t *testing.T) {
	t.Parallel()
	other, c := twoClientsOnOneServer(t)
	c.send(parse("", "select 1::int as mine"), syncMsg())
	if got := c.until(1); got != "1 Z" {
		t.Fatalf("Parse: %s", got)
	}
	// Another client's unnamed statement on the one server in between.
	other.send(parse("", "select 'x'::text as theirs, 2 as two"), syncMsg())
	other.until(1)
	c.send(&pgproto3.Describe{ObjectType: 'S'}, syncMsg())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var fields []string
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rd, ok := msg.(*pgproto3.RowDescription); ok {
			for _, fd := range rd.Fields {
				fields = append(fields, string(fd.Name))
			}
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("Describe of the client's own unnamed statement: %s %s", e.Code, e.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if strings.Join(fields, ",") != "mine" {
		t.Fatalf("the Describe described columns %v; want [mine], the client's own statement", fields)
	}
}

// A drop of every statement that pgferry refuses (a read-only transaction
// no replica can take, with replica_fallback = error) leaves the client's
// statements as the client sees them: still there. The client binds its
// statement after the refusal and runs it.
func TestAClientsStatementsOutliveItsRefusedDrop(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	db := cfg.Databases["app"]
	// A replica nobody listens for: never in rotation.
	db.Replicas = []configs.Replica{{Host: "127.0.0.1", Port: closedPort(t), Weight: 1}}
	db.LagCheckInterval = configs.Duration(100 * time.Millisecond)
	db.ReplicaFallback = "error"
	db.ReadYourWrites = 0 // (the read-only transaction after its statement goes to a replica too)
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.want("c prepares", 1, "1 2 D:mine C Z", parse("s", "select 'mine'"), bind("s"), execMsg(), syncMsg())
	for _, sql := range []string{"begin read only; deallocate all", "begin read only; discard all"} {
		c.want("the refused drop "+sql, 1, "E:08006 Z", &pgproto3.Query{String: sql})
		c.want("c binds its statement after "+sql, 1, "2 D:mine C Z", bind("s"), execMsg(), syncMsg())
	}
}
