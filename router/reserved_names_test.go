package router_test

// End-to-end tests of the names pgferry gives clients' statements on shared
// server connections (pgferry_<n>): a client reaches none of them by SQL.
// Two clients share one server connection: a prepares a statement with pgx,
// so that pgferry's name for it is on the server, and b tries every SQL
// statement that names a prepared statement.

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router/classify"
	"github.com/pgferry/pgferry/router/prepared"
)

// The prefix classify refuses is the one pgferry names its statements with.
func TestTheReservedPrefixIsTheOnePgferryNamesItsStatementsWith(t *testing.T) {
	if classify.ReservedPrefix != prepared.NamePrefix {
		t.Fatalf("classify.ReservedPrefix = %q, prepared.NamePrefix = %q", classify.ReservedPrefix, prepared.NamePrefix)
	}
}

// serverStatementsNow returns the statements on the server connection
// conn's next simple query runs on, each as name@prepare_time (with " SQL"
// after one SQL's PREPARE made), in order: a statement prepared again
// shows a new time.
func serverStatementsNow(t *testing.T, ctx context.Context, conn *pgx.Conn) string {
	t.Helper()
	var got string
	err := conn.QueryRow(ctx, "select coalesce(string_agg(name || '@' || prepare_time::text || case when from_sql then ' SQL' else '' end, "+
		"',' order by name), '') from pg_prepared_statements", pgx.QueryExecModeSimpleProtocol).Scan(&got)
	if err != nil {
		t.Fatalf("statements on the server: %v", err)
	}
	return got
}

// queryAll runs sql on conn in mode and reads its rows: the extended
// protocol's modes parse it (pgx's Exec takes a query without arguments
// as a simple one whatever the mode).
func queryAll(ctx context.Context, conn *pgx.Conn, sql string, mode pgx.QueryExecMode) error {
	rows, err := conn.Query(ctx, sql, mode)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// reservedNameError is the refusal's message.
const reservedNameError = `prepared statement names beginning with "pgferry_" are reserved by pgferry`

func TestAClientCannotRunOrDropAnotherClientsStatementByPgferrysNameInSQL(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	// (A client pinned by mistake holds the only server: the other's
	// wait then fails soon.)
	cfg.QueryWaitTimeout = configs.Duration(5 * time.Second)
	f := ferrytest.Start(t, cfg)
	a, b := ferrytest.Connect(t, ctx, f.AppDSN()), ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := a.Prepare(ctx, "secret", "select 'a''s secret'"); err != nil {
		t.Fatal(err)
	}
	aRunsItsStatement := func(when string) {
		t.Helper()
		var s string
		if err := a.QueryRow(ctx, "secret").Scan(&s); err != nil || s != "a's secret" {
			t.Fatalf("%s: a's statement gives %q, %v", when, s, err)
		}
	}
	aRunsItsStatement("at first")
	before := serverStatementsNow(t, ctx, b)
	name, _, _ := strings.Cut(before, "@")
	if !strings.HasPrefix(name, "pgferry_") || strings.Contains(before, ",") {
		t.Fatalf("statements on the server: %q", before)
	}
	// a's statement stays as it was, and b made none by SQL. (Those pgx
	// prepares for b stand beside it.)
	aStatementIntact := func(t *testing.T, after string) {
		t.Helper()
		if now := serverStatementsNow(t, ctx, b); !strings.Contains(now, before) || strings.Contains(now, " SQL") {
			t.Fatalf("after %s the statements on the server went from %q to %q", after, before, now)
		}
	}
	n := strings.TrimPrefix(name, "pgferry_")
	tests := []struct {
		name, sql  string
		simpleOnly bool // several statements: no Parse takes them
	}{
		{"execute", "execute " + name, false},
		{"execute in upper case", "EXECUTE " + strings.ToUpper(name), false},
		{"execute a quoted name", `execute "` + name + `"`, false},
		{"execute a name in Unicode escapes", `execute U&"pgferry\005f` + n + `"`, false},
		{"explain execute", "explain execute " + name, false},
		{"explain analyze execute", "explain (analyze, costs off) execute " + name, false},
		{"create table as execute", "create table t as execute " + name, false},
		{"explain create table as execute", "explain analyze create table t as execute " + name, false},
		{"deallocate", "deallocate " + name, false},
		{"deallocate prepare", "DEALLOCATE PREPARE " + name, false},
		{"prepare a name pgferry may want", "prepare pgferry_" + n + "0 as select 'b'", false},
		{"execute after another statement", "select 1; execute " + name, true},
	}
	for _, tc := range tests {
		modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec}
		if tc.simpleOnly {
			modes = modes[:1]
		}
		for _, mode := range modes {
			t.Run(tc.name+" by "+mode.String(), func(t *testing.T) {
				err := queryAll(ctx, b, tc.sql, mode)
				if pe := expectPgError(t, err, "42501"); pe.Message != reservedNameError {
					t.Errorf("the refusal says %q; want %q", pe.Message, reservedNameError)
				}
				aStatementIntact(t, tc.sql)
				aRunsItsStatement("after b's " + tc.sql)
			})
		}
	}
	t.Run("execute inside a transaction", func(t *testing.T) {
		tx, err := b.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "execute "+name, pgx.QueryExecModeSimpleProtocol)
		expectPgError(t, err, "42501")
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		aRunsItsStatement("after b's transaction")
	})
	// b's session goes on, unpinned: a got the one server connection
	// between b's statements all along.
	var one int
	if err := b.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("b after its refused statements: %d, %v", one, err)
	}
	aStatementIntact(t, "all of b's statements")
	aRunsItsStatement("at last")
}

// The names a client might take with PREPARE are those pgferry gives its
// next statements (counting up from 1): refused, no client holds one, and
// the statements pgferry prepares under them run their own SQL.
func TestAPrepareOfANamePgferryGivesLaterIsRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.QueryWaitTimeout = configs.Duration(5 * time.Second)
	f := ferrytest.Start(t, cfg)
	a, b := ferrytest.Connect(t, ctx, f.AppDSN()), ferrytest.Connect(t, ctx, f.AppDSN())
	for _, name := range []string{"pgferry_1", "pgferry_2", "pgferry_3"} {
		_, err := b.Exec(ctx, "prepare "+name+" as select 'b''s'", pgx.QueryExecModeSimpleProtocol)
		expectPgError(t, err, "42501")
	}
	for i := 1; i <= 3; i++ {
		want := "a's " + strconv.Itoa(i)
		var got string
		if err := a.QueryRow(ctx, "select 'a''s "+strconv.Itoa(i)+"'").Scan(&got); err != nil || got != want {
			t.Fatalf("a's statement %d gives %q, %v; want %q", i, got, err, want)
		}
	}
	if now := serverStatementsNow(t, ctx, b); strings.Contains(now, " SQL") || strings.Count(now, "pgferry_") != 3 {
		t.Fatalf("statements on the server: %q; want pgferry's three for a, none made by SQL", now)
	}
}

// A session-mode client has its server to itself, but pgferry names its
// statements there too: its SQL cannot drop them behind pgferry's back.
func TestASessionModeClientCannotDeallocateItsStatementByPgferrysName(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PoolMode = "session"
	db := cfg.Databases["app"]
	db.PoolMode = "session"
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := a.Prepare(ctx, "mine", "select 'mine'"); err != nil {
		t.Fatal(err)
	}
	before := serverStatementsNow(t, ctx, a)
	name, _, _ := strings.Cut(before, "@")
	_, err := a.Exec(ctx, "deallocate "+name, pgx.QueryExecModeSimpleProtocol)
	expectPgError(t, err, "42501")
	if now := serverStatementsNow(t, ctx, a); now != before {
		t.Fatalf("statements on the server went from %q to %q", before, now)
	}
	var s string
	if err := a.QueryRow(ctx, "mine").Scan(&s); err != nil || s != "mine" {
		t.Fatalf("a's statement gives %q, %v", s, err)
	}
}

// A client's DEALLOCATE ALL or DISCARD ALL clears pgferry's record of its
// server's statements as it is sent (a pipeline behind it prepares its
// statements again); its answer, which comes after what the pipeline
// prepared behind it, clears nothing more: those statements are not
// prepared a second time.
func TestStatementsPreparedBehindAPipelinedDropAreNotPreparedAgain(t *testing.T) {
	t.Parallel()
	for i, d := range pipelinedDrops {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			cs, _ := clientsOnOneServer(t, 10, 2)
			c, other := cs[0], cs[1]
			other.want("other prepares", 1, "1 2 D:o C Z", parse("o", "select 'o'"), bind("o"), execMsg(), syncMsg())
			c.dropThen(i, "1 2 D:t C Z", parse("t", "select 't'"), bind("t"), execMsg(), syncMsg())
			// (The drop dropped other's statement too, as it drops every
			// statement of the server.)
			before := c.pgferryStatements(byNameWithTime)
			if before == "" || strings.Contains(before, ",") {
				t.Fatalf("statements on the server after the pipeline: %q", before)
			}
			for round := range 2 {
				c.want("bind t later", 1, "2 D:t C Z", bind("t"), execMsg(), syncMsg())
				other.want("other prepares t's text", 1, "1 2 D:t C 3 Z", parse("x", "select 't'"), bind("x"), execMsg(), closeStmt("x"), syncMsg())
				_ = round
			}
			if now := c.pgferryStatements(byNameWithTime); now != before {
				t.Fatalf("statements on the server went from %q to %q: prepared again", before, now)
			}
		})
	}
}

// A drop refused with the rest of its query leaves the statements of the
// server the client goes to next alone: with pin_on_session_state = false
// a query of a drop and a SET pgferry cannot carry is refused before
// anything is recorded; a read-only transaction that no replica can take
// (replica_fallback = error) is refused after, when no server comes.
func TestARefusedDropClearsNoServersStatements(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.PinOnSessionState = false
	db := cfg.Databases["app"]
	// A replica nobody listens for: never in rotation.
	db.Replicas = []configs.Replica{{Host: "127.0.0.1", Port: closedPort(t), Weight: 1}}
	db.LagCheckInterval = configs.Duration(100 * time.Millisecond)
	db.ReplicaFallback = "error"
	db.ReadYourWrites = 0 // (c's reads after its statements go to replicas too)
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	a, c := newRawClient(t, f.AppDSN()), newRawClient(t, f.AppDSN())
	a.want("a prepares", 1, "1 2 D:a C Z", parse("s", "select 'a'"), bind("s"), execMsg(), syncMsg())
	before := a.pgferryStatements(byNameWithTime)
	for _, tc := range []struct{ sql, want string }{
		{"deallocate all; set app.x = 1", "E:0A000 Z"},
		{"discard all; select pg_advisory_lock(1)", "E:0A000 Z"},
		{"begin read only; deallocate all", "E:08006 Z"},
	} {
		c.want("the refused drop "+tc.sql, 1, tc.want, &pgproto3.Query{String: tc.sql})
		c.want("c's next query", 1, "T D:1 C Z", &pgproto3.Query{String: "select 1"})
		a.want("a binds", 1, "2 D:a C Z", bind("s"), execMsg(), syncMsg())
		if now := a.pgferryStatements(byNameWithTime); now != before {
			t.Fatalf("after %q statements on the server went from %q to %q: prepared again", tc.sql, before, now)
		}
	}
}

// closedPort returns a local TCP port nothing listens on (it listened for
// a moment).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
