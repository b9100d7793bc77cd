package router_test

// End-to-end tests of route_read_statements: a single autocommit statement
// that is plainly a read goes to a replica, in either protocol, and
// anything pipelined behind it that is not a read keeps the whole of it on
// the primary.

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestRouteReadStatementsSendsAReadToAReplicaAndKeepsAPipelineWithAWriteOnThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) { db.RouteReadStatements = true }))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table routed (x int)"); err != nil {
		t.Fatal(err)
	}
	port := func(mode pgx.QueryExecMode) int {
		t.Helper()
		var p int
		if err := conn.QueryRow(ctx, "select inet_server_port()", mode).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ferrytest.Eventually(t, 20*time.Second, "a read to run on the replica", func() (bool, error) {
		return port(pgx.QueryExecModeSimpleProtocol) == replica.Port, nil
	})

	t.Run("a read in either protocol runs on the replica", func(t *testing.T) {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
			if p := port(mode); p != replica.Port {
				t.Errorf("%v: the read ran on port %d, want the replica's %d", mode, p, replica.Port)
			}
		}
	})

	t.Run("a batch of a read and a write runs on the primary", func(t *testing.T) {
		for _, mode := range []string{"cache_statement", "exec"} {
			c := ferrytest.Connect(t, ctx, f.AppDSN()+" default_query_exec_mode="+mode)
			b := &pgx.Batch{}
			var readPort, writePort int
			b.Queue("select inet_server_port()").QueryRow(func(r pgx.Row) error { return r.Scan(&readPort) })
			b.Queue("insert into routed values (1) returning inet_server_port()").QueryRow(func(r pgx.Row) error { return r.Scan(&writePort) })
			if err := c.SendBatch(ctx, b).Close(); err != nil {
				t.Fatalf("%v: the batch failed: %v", mode, err)
			}
			if readPort != primary.Port || writePort != primary.Port {
				t.Errorf("%v: the batch ran on ports %d and %d, want the primary's %d", mode, readPort, writePort, primary.Port)
			}
		}
	})

	t.Run("a statement named and run in one pipeline runs where it belongs", func(t *testing.T) {
		pc := conn.PgConn()
		run := func(name, sql string) int {
			t.Helper()
			p := pc.StartPipeline(ctx)
			p.SendPrepare(name, sql, nil)
			p.SendQueryPrepared(name, nil, nil, nil)
			p.SendDeallocate(name)
			if err := p.Sync(); err != nil {
				t.Fatal(err)
			}
			port := 0
			for {
				res, err := p.GetResults()
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				if res == nil {
					break
				}
				if rr, ok := res.(*pgconn.ResultReader); ok {
					r := rr.Read()
					if r.Err != nil {
						t.Fatalf("%s: %v", sql, r.Err)
					}
					if len(r.Rows) == 1 {
						if port, err = strconv.Atoi(string(r.Rows[0][0])); err != nil {
							t.Fatal(err)
						}
					}
				}
				if _, ok := res.(*pgconn.PipelineSync); ok {
					break
				}
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			return port
		}
		if p := run("routed_read", "select inet_server_port()"); p != replica.Port {
			t.Errorf("a named read ran on port %d, want the replica's %d", p, replica.Port)
		}
		if p := run("routed_write", "insert into routed values (2) returning inet_server_port()"); p != primary.Port {
			t.Errorf("a named write ran on port %d, want the primary's %d", p, primary.Port)
		}
	})
}

// A write sent by simple query in the same write as a read behind it would
// run on the read's replica, linked while the read's answer is owed, and
// fail there (25006): the two run on the primary (onlyReadQueriesFollow).
func TestRouteReadStatementsKeepsAWritePipelinedBehindASimpleQueryReadOnThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) { db.RouteReadStatements = true }))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table review_routed (x int)"); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.AppDSN())
	ferrytest.Eventually(t, 20*time.Second, "a read to run on the replica, which has the table", func() (bool, error) {
		c.send(&pgproto3.Query{String: "select inet_server_port() from (select count(*) from review_routed) t"})
		return c.until(1) == "T D:"+strconv.Itoa(replica.Port)+" C Z", nil
	})
	c.send(
		&pgproto3.Query{String: "select inet_server_port()"},
		&pgproto3.Query{String: "insert into review_routed values (1) returning inet_server_port()"},
	)
	got := c.until(2)
	if !strings.HasSuffix(got, " T D:"+strconv.Itoa(primary.Port)+" C Z") {
		t.Fatalf("a read and a write pipelined by simple query: %s; want the write run on the primary (port %d; the replica's is %d)", got, primary.Port, replica.Port)
	}
}
