package router_test

// End-to-end tests of transaction and session semantics through pgferry:
// departing clients, waiting for a server, cancellation, session mode,
// pinning, session parameters and graceful shutdown.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestClientKilledMidTransactionLeavesNoOpenTransaction(t *testing.T) {
	t.Parallel()
	idle := func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {}
	tests := []struct {
		name        string
		sessionMode bool
		// kill runs the client's last statement; it must return once the
		// server is busy with it or idle in the transaction.
		kill func(t *testing.T, ctx context.Context, tx pgx.Tx, db string)
	}{
		{"idle in the transaction", false, idle},
		{"idle in the transaction, session mode", true, idle},
		{"while a query runs", false, func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Fails once the connection is closed under it.
				_, _ = tx.Exec(ctx, "select pg_sleep(1)")
			}()
			t.Cleanup(func() { <-done })
			ferrytest.Eventually(t, 10*time.Second, "the query to run on the server", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query = 'select pg_sleep(1)'", db)
				return n == 1, err
			})
		}},
		{"during COPY FROM", false, func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {
			release := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				rows := 0
				src := pgx.CopyFromFunc(func() ([]any, error) {
					if rows++; rows > 100 {
						<-release // the client stalls mid-COPY
						return nil, errors.New("stalled client gave up")
					}
					return []any{rows}, nil
				})
				_, _ = tx.CopyFrom(ctx, pgx.Identifier{"killed"}, []string{"x"}, src)
			}()
			t.Cleanup(func() { close(release); <-done })
			ferrytest.Eventually(t, 10*time.Second, "the server to be in COPY", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query like 'copy %'", db)
				return n == 1, err
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			// One server: if pgferry returned the dead client's server to
			// the pool mid-transaction, the next client would get it and
			// see the uncommitted row.
			setPoolSize(cfg, "app", 1)
			if tc.sessionMode {
				e := cfg.Databases["app"]
				e.PoolMode = "session"
				cfg.Databases["app"] = e
			}
			f := ferrytest.Start(t, cfg)
			// Clients come and go: in session mode each holds the only
			// server for as long as it is connected.
			countRows := func() int {
				t.Helper()
				c, err := pgx.Connect(ctx, f.AppDSN())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(ctx)
				var n int
				if err := c.QueryRow(ctx, "select count(*) from killed").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			setup, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := setup.Exec(ctx, "create table killed (x int)"); err != nil {
				t.Fatal(err)
			}
			if err := setup.Close(ctx); err != nil {
				t.Fatal(err)
			}

			conn, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into killed values ($1)", 1); err != nil {
				t.Fatal(err)
			}
			n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'idle in transaction'", db)
			if err != nil || n != 1 {
				t.Fatalf("sessions idle in transaction before the kill: %d %v", n, err)
			}
			tc.kill(t, ctx, tx, db)
			// Abruptly: no Terminate, just the socket closing.
			if err := conn.PgConn().Conn().Close(); err != nil {
				t.Fatal(err)
			}

			ferrytest.Eventually(t, 15*time.Second, "no transaction left open on the server", func() (bool, error) {
				n, err := busyBackends(ctx, db)
				return n == 0, err
			})
			for range 3 {
				if rows := countRows(); rows != 0 {
					t.Fatalf("the killed client's uncommitted insert is visible (%d rows)", rows)
				}
			}
		})
	}
}

func TestQueryWaitTimeoutDisconnectsAClientThatWaitedTooLongForAServer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 1)
	// The holder's login dials the pool's first server connection within
	// this bound too: 300 ms ran out once under -race on a loaded machine.
	cfg.QueryWaitTimeout = configs.Duration(2 * time.Second)
	f := ferrytest.Start(t, cfg)

	holder := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	waiter := ferrytest.Connect(t, ctx, f.AppDSN())
	_, err = waiter.Exec(ctx, "select 2")
	pe := expectPgError(t, err, "08P01")
	if pe.Severity != "FATAL" || pe.Message != "query_wait_timeout" {
		t.Fatalf("got %s %q, want FATAL query_wait_timeout", pe.Severity, pe.Message)
	}
	ferrytest.Eventually(t, 5*time.Second, "the waiting client to be disconnected", func() (bool, error) {
		return waiter.IsClosed(), nil
	})

	// The holder is unaffected and, once it commits, others get the server.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	next := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := next.QueryRow(ctx, "select 3").Scan(&one); err != nil || one != 3 {
		t.Fatalf("after the holder committed: %d %v", one, err)
	}
}

func TestCancelRequestStopsTheRunningQueryAndTheSessionGoesOn(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)

	tests := []struct {
		name string
		run  func(ctx context.Context, conn *pgx.Conn) error
		text string // the query as pg_stat_activity shows it
	}{
		{"simple protocol", func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "select pg_sleep(30)")
			return err
		}, "select pg_sleep(30)"},
		{"extended protocol", func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "select pg_sleep($1::int)", 31)
			return err
		}, "select pg_sleep($1::int)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			// Make pgx send a CancelRequest when the context ends (its
			// default only closes the connection). The deadline bounds the
			// test if the cancel is lost.
			cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 20 * time.Second}
			}
			conn := ferrytest.ConnectConfig(t, ctx, cc)

			qctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- tc.run(qctx, conn) }()
			ferrytest.Eventually(t, 10*time.Second, "the query to run on the server", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query = $2", db, tc.text)
				return n == 1, err
			})
			cancel()
			err = <-errc
			expectPgError(t, err, "57014")

			ferrytest.Eventually(t, 10*time.Second, "the server to finish the canceled query", func() (bool, error) {
				n, err := busyBackends(ctx, db)
				return n == 0, err
			})
			for i := range 5 {
				var n int
				if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("query %d after the cancel: %d %v", i, n, err)
				}
			}
		})
	}
}

func TestSessionModeKeepsSessionStateAndResetsTheServerForTheNextClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PoolMode = "session"
	e := cfg.Databases["app"]
	e.PoolMode = "session"
	e.PoolSize = 1
	cfg.Databases["app"] = e
	f := ferrytest.Start(t, cfg)

	first, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	for _, sql := range []string{
		"create temp table session_tmp (x int)",
		"set work_mem = '7MB'",
		"begin; insert into session_tmp values (1); commit",
		"insert into session_tmp values (2)",
	} {
		if _, err := first.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var rows int
	var workMem string
	var firstPID uint32
	if err := first.QueryRow(ctx, "select (select count(*) from session_tmp), current_setting('work_mem'), pg_backend_pid()").Scan(&rows, &workMem, &firstPID); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || workMem != "7MB" {
		t.Fatalf("session state across transactions: %d rows, work_mem %s", rows, workMem)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The only server connection goes to the next client, reset.
	next := ferrytest.Connect(t, ctx, f.AppDSN())
	var pid uint32
	var tmpGone bool
	if err := next.QueryRow(ctx, "select pg_backend_pid(), to_regclass('pg_temp.session_tmp') is null, current_setting('work_mem')").Scan(&pid, &tmpGone, &workMem); err != nil {
		t.Fatal(err)
	}
	if pid != firstPID {
		t.Fatalf("next client got server pid %d, want the first client's %d reset and reused", pid, firstPID)
	}
	if !tmpGone || workMem != "4MB" {
		t.Fatalf("next client sees the first client's session: temp table gone %v, work_mem %s", tmpGone, workMem)
	}
}

func TestSessionStatePinsTheClientToItsServerInTransactionMode(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)

	simple := func(sql string) func(context.Context, *pgx.Conn) error {
		return func(ctx context.Context, c *pgx.Conn) error { _, err := c.Exec(ctx, sql); return err }
	}
	extended := func(sql string, args ...any) func(context.Context, *pgx.Conn) error {
		return func(ctx context.Context, c *pgx.Conn) error {
			if len(args) > 0 {
				_, err := c.Exec(ctx, sql, args...)
				return err
			}
			// pgx.Conn.Exec uses the simple protocol without arguments.
			return c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
		}
	}
	unlocks := func(ctx context.Context, c *pgx.Conn) error {
		var ok bool
		if err := c.QueryRow(ctx, "select pg_advisory_unlock(1)").Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return errors.New("pg_advisory_unlock(1) returned false: the lock is held by another server connection")
		}
		return nil
	}
	tenant42 := func(ctx context.Context, c *pgx.Conn) error {
		var v string
		if err := c.QueryRow(ctx, "select current_setting('app.tenant', true)").Scan(&v); err != nil {
			return err
		}
		if v != "42" {
			return fmt.Errorf("app.tenant is %q on this server connection; want 42", v)
		}
		return nil
	}
	usesTemp := func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "insert into pin_tmp values ($1)", 1); err != nil {
			return err
		}
		var n int
		return c.QueryRow(ctx, "select count(*) from pin_tmp").Scan(&n)
	}
	tests := []struct {
		name  string
		state func(context.Context, *pgx.Conn) error
		check func(context.Context, *pgx.Conn) error
	}{
		{"session advisory lock, simple protocol", simple("select pg_advisory_lock(1)"), unlocks},
		{"session advisory lock, extended protocol", extended("select pg_advisory_lock($1)", 1), unlocks},
		{"session advisory lock taken by EXPLAIN ANALYZE", simple("explain analyze select pg_advisory_lock(1)"), unlocks},
		{"session advisory lock in a parenthesised query, extended protocol", extended("(select pg_advisory_lock($1))", 1), unlocks},
		{"set_config for the session, simple protocol", simple("select set_config('app.tenant', '42', false)"), tenant42},
		{"set_config for the session, extended protocol", extended("select set_config($1, $2, false)", "app.tenant", "42"), tenant42},
		{"temporary table, simple protocol", simple("create temp table pin_tmp (x int)"), usesTemp},
		{"temporary table, extended protocol", extended("create temp table pin_tmp (x int)"), usesTemp},
		{"SQL PREPARE", simple("prepare pin_stmt as select 1"), simple("execute pin_stmt")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := ferrytest.Start(t, cfg)
			a := ferrytest.Connect(t, ctx, f.AppDSN())
			b := ferrytest.Connect(t, ctx, f.AppDSN())
			if err := tc.state(ctx, a); err != nil {
				t.Fatal(err)
			}
			var aPID, bPID, aPIDLater uint32
			if err := a.QueryRow(ctx, "select pg_backend_pid()").Scan(&aPID); err != nil {
				t.Fatal(err)
			}
			// b takes the most recently released server, which is a's
			// unless a is pinned to it.
			tx, err := b.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&bPID); err != nil {
				t.Fatal(err)
			}
			checkErr := tc.check(ctx, a)
			if err := a.QueryRow(ctx, "select pg_backend_pid()").Scan(&aPIDLater); err != nil {
				t.Fatal(err)
			}
			if bPID == aPID || aPIDLater != aPID {
				t.Errorf("client not pinned: its server pid went %d -> %d while another client got %d", aPID, aPIDLater, bPID)
			}
			if checkErr != nil {
				t.Errorf("session state lost between transactions: %v", checkErr)
			}
		})
	}
}

func TestSessionStateIsRefusedWhenPinningIsOff(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PinOnSessionState = false
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name     string
		sql      string
		inTx     bool
		extended bool
	}{
		{"temporary table", "create temp table refused_tmp (x int)", false, false},
		{"session advisory lock", "select pg_advisory_lock(1)", false, false},
		{"set_config for the session", "select set_config('app.tenant', '42', false)", false, true},
		{"temporary table inside a transaction", "create temp table refused_tmp (x int)", true, false},
		{"temporary table, extended protocol", "create temp table refused_tmp (x int)", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := ferrytest.Connect(t, ctx, f.AppDSN())
			var tx pgx.Tx
			if tc.inTx {
				var err error
				if tx, err = conn.Begin(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tc.extended {
				err = conn.PgConn().ExecParams(ctx, tc.sql, nil, nil, nil, nil).Read().Err
			} else {
				_, err = conn.Exec(ctx, tc.sql)
			}
			pe := expectPgError(t, err, "0A000")
			if pe.Severity != "ERROR" {
				t.Fatalf("severity %s, want ERROR: the session should continue", pe.Severity)
			}
			if tx != nil {
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var n int
			if err := conn.QueryRow(ctx, "select count(*) from pg_class where relname = 'refused_tmp'").Scan(&n); err != nil || n != 0 {
				t.Fatalf("after the refusal: %d tables named refused_tmp, %v", n, err)
			}
		})
	}
}

func TestSessionParametersFollowEachClientAcrossServerConnections(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)

	a := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name=core-a")
	b := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name=core-b")
	type seen struct {
		searchPath, timeZone, appName string
		pid                           uint32
	}
	const query = "select current_setting('search_path'), current_setting('TimeZone'), current_setting('application_name'), pg_backend_pid()"
	look := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) seen {
		t.Helper()
		var s seen
		if err := q.QueryRow(ctx, query).Scan(&s.searchPath, &s.timeZone, &s.appName, &s.pid); err != nil {
			t.Fatal(err)
		}
		return s
	}
	defaults := look(b)
	if defaults.searchPath != `"$user", public` || defaults.appName != "core-b" {
		t.Fatalf("defaults: %+v", defaults)
	}
	for _, sql := range []string{
		"create schema a_schema",
		"set search_path to a_schema",
		"SET TimeZone TO 'America/New_York'",
	} {
		if _, err := a.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	wantA := seen{searchPath: "a_schema", timeZone: "America/New_York", appName: "core-a"}
	wantB := seen{searchPath: defaults.searchPath, timeZone: defaults.timeZone, appName: "core-b"}
	if wantB.timeZone == wantA.timeZone {
		t.Fatalf("the server default time zone is already %s", wantA.timeZone)
	}
	check := func(who string, got, want seen) {
		t.Helper()
		got.pid = 0
		if got != want {
			t.Fatalf("%s sees %+v, want %+v", who, got, want)
		}
	}

	// Interleave so that each client runs on both server connections: while
	// one holds a server in a transaction, the other must use the second.
	aPIDs := map[uint32]bool{}
	bPIDs := map[uint32]bool{}
	for range 10 {
		txA, err := a.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := look(txA)
		aPIDs[s.pid] = true
		check("a in its transaction", s, wantA)
		s = look(b)
		bPIDs[s.pid] = true
		check("b while a holds a server", s, wantB)
		if err := txA.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		txB, err := b.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s = look(txB)
		bPIDs[s.pid] = true
		check("b in its transaction", s, wantB)
		s = look(a)
		aPIDs[s.pid] = true
		check("a while b holds a server", s, wantA)
		if err := txB.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(aPIDs) < 2 || len(bPIDs) < 2 {
		t.Fatalf("clients did not move between server connections (a used %d, b used %d)", len(aPIDs), len(bPIDs))
	}

	// And concurrently, in short transactions.
	errc := make(chan error, 2)
	for _, c := range []struct {
		conn *pgx.Conn
		want seen
	}{{a, wantA}, {b, wantB}} {
		go func() {
			for range 100 {
				var s seen
				err := pgx.BeginFunc(ctx, c.conn, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, query).Scan(&s.searchPath, &s.timeZone, &s.appName, &s.pid)
				})
				if err != nil {
					errc <- err
					return
				}
				s.pid = 0
				if s != c.want {
					errc <- errors.New("got " + s.searchPath + " / " + s.timeZone + " / " + s.appName + ", want " + c.want.searchPath + " / " + c.want.timeZone + " / " + c.want.appName)
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func TestGracefulShutdownLetsTheOpenTransactionCommitThenClosesTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table drained (x int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into drained values ($1)", 1); err != nil {
		t.Fatal(err)
	}
	// A second client sits idle between transactions.
	idle := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := idle.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	cut := make(chan int, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cut <- f.Server.Shutdown(sctx)
	}()
	ferrytest.Eventually(t, 10*time.Second, "pgferry to stop accepting clients", func() (bool, error) {
		c, err := net.DialTimeout("tcp", f.Addr.String(), time.Second)
		if err != nil {
			return true, nil
		}
		return false, c.Close()
	})
	// The transaction in progress may still finish.
	if _, err := tx.Exec(ctx, "insert into drained values ($1)", 2); err != nil {
		t.Fatalf("statement inside the open transaction during shutdown: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	// Then the session ends by itself (Shutdown returns without cutting
	// it) and the client's next query fails.
	select {
	case n := <-cut:
		if n != 0 {
			t.Fatalf("Shutdown cut %d sessions, want 0: the client was not let go after its transaction", n)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return")
	}
	for _, c := range []*pgx.Conn{conn, idle} {
		_, err := c.Exec(ctx, "select 1")
		if err == nil {
			t.Fatal("a client can still run queries after Shutdown returned")
		}
		// The goodbye, if the client read it, says why.
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code != "57P01" {
			t.Fatalf("got %v, want admin_shutdown (57P01) or a closed connection", err)
		}
	}
	ferrytest.Eventually(t, 10*time.Second, "the server connections to close", func() (bool, error) {
		n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1", db)
		return n == 0, err
	})
	rows := ferrytest.Connect(t, ctx, cluster.SuperDSN(db))
	var committed int
	if err := rows.QueryRow(ctx, "select count(*) from drained").Scan(&committed); err != nil || committed != 2 {
		t.Fatalf("committed rows: %d %v, want 2", committed, err)
	}
}

func TestSearchPathSetByOneClientNeverLeaksToAnother(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	setup := ferrytest.Connect(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	if _, err := setup.Exec(ctx, "create schema a_schema"); err != nil {
		t.Fatal(err)
	}
	const def = `"$user", public`
	tests := []struct {
		name  string
		sql   []string // simple queries, one message each
		wantA string   // what the client that ran sql sees afterwards
	}{
		{"SET outside a transaction", []string{"set search_path to a_schema"}, "a_schema"},
		{"SET in a committed transaction", []string{"begin", "set search_path to a_schema", "commit"}, "a_schema"},
		{"SET in a rolled back transaction", []string{"begin", "set search_path to a_schema", "rollback"}, def},
		{"SET in a committed transaction, one query string", []string{"begin; set search_path to a_schema; commit"}, "a_schema"},
		{"SET in a rolled back transaction, one query string", []string{"begin; set search_path to a_schema; rollback"}, def},
		{"SET LOCAL", []string{"begin", "set local search_path to a_schema", "commit"}, def},
		{"SET after nested block comments", []string{"/* a /* b */ c */ set search_path to a_schema"}, "a_schema"},
		{"SET after an escape string", []string{`select e'\''; set search_path to a_schema; --'`}, "a_schema"},
		{"SET of a quoted name", []string{`set "search_path" to a_schema`}, "a_schema"},
		{"SET after a comment a carriage return ends", []string{"select 1 -- x\r; set search_path to a_schema"}, "a_schema"},
		{"SET after an identifier with dollar signs", []string{"select 1 as a$b$; set search_path to a_schema"}, "a_schema"},
		{"SET after an escape string continued on the next line", []string{"select E'a'\n'\\'' , '\\'; set search_path to a_schema; select 'z'"}, "a_schema"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := ferrytest.Start(t, cfg)
			a := ferrytest.Connect(t, ctx, f.AppDSN())
			b := ferrytest.Connect(t, ctx, f.AppDSN())
			for _, sql := range tc.sql {
				if _, err := a.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			// b takes the server a just used (the most recently released)
			// and holds it, so a moves to the other one.
			tx, err := b.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var gotB, gotA string
			if err := tx.QueryRow(ctx, "show search_path").Scan(&gotB); err != nil {
				t.Fatal(err)
			}
			if err := a.QueryRow(ctx, "show search_path").Scan(&gotA); err != nil {
				t.Fatal(err)
			}
			if gotB != def {
				t.Errorf("another client sees search_path %q, want the default %q: session state leaked", gotB, def)
			}
			if gotA != tc.wantA {
				t.Errorf("the client that ran %q sees search_path %q, want %q", strings.Join(tc.sql, "; "), gotA, tc.wantA)
			}
		})
	}
}

func TestLateCancelRequestNeverCancelsAnotherClientsQuery(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	proxy := startProxy(t, net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
	cfg, db := configWithOwnDatabase(t)
	e := cfg.Databases["app"]
	e.Port = proxy.port()
	e.PoolSize = 1
	cfg.Databases["app"] = e
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	b := ferrytest.Connect(t, ctx, f.AppDSN())
	ctrl := ferrytest.Connect(t, ctx, cluster.SuperDSN(db)) // directly, to hold locks

	// The pool's only server connection goes through the proxy now; later
	// connections (the cancel's) wait at the gate.
	if _, err := a.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	proxy.hold()
	if _, err := ctrl.Exec(ctx, "select pg_advisory_lock(5), pg_advisory_lock(6)"); err != nil {
		t.Fatal(err)
	}
	waitingOnLock := func(query string) func() (bool, error) {
		return func() (bool, error) {
			n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query = $2", db, query)
			return n == 1, err
		}
	}

	// a's query waits on lock 5; a asks pgferry to cancel it.
	aErr := make(chan error, 1)
	go func() { _, err := a.Exec(ctx, "select pg_advisory_xact_lock(5)"); aErr <- err }()
	ferrytest.Eventually(t, 10*time.Second, "a's query to wait on its lock", waitingOnLock("select pg_advisory_xact_lock(5)"))
	cancelDone := make(chan error, 1)
	go func() { cancelDone <- a.PgConn().CancelRequest(ctx) }()
	select {
	case <-proxy.pending:
	case <-ctx.Done():
		t.Fatal("pgferry did not connect to the server to deliver the cancel")
	}
	// Before the cancel gets through, a's query finishes by itself.
	if _, err := ctrl.Exec(ctx, "select pg_advisory_unlock(5)"); err != nil {
		t.Fatal(err)
	}
	if err := <-aErr; err != nil {
		t.Fatalf("a's query: %v", err)
	}

	// b, which never asked for a cancel, queries next. pgferry must not
	// give it the server a cancel is still on its way to (PgBouncer holds
	// such a server back until the cancel is done).
	bErr := make(chan error, 1)
	go func() { _, err := b.Exec(ctx, "select pg_advisory_xact_lock(6)"); bErr <- err }()
	// With the bug, b's query reaches the server at once; without it, b
	// waits for the server and this poll gives up quietly.
	giveUp := time.After(2 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
poll:
	for {
		if ok, err := waitingOnLock("select pg_advisory_xact_lock(6)")(); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		select {
		case <-giveUp:
			break poll
		case <-tick.C:
		}
	}
	proxy.open()
	if err := <-cancelDone; err != nil {
		t.Fatalf("cancel request: %v", err)
	}
	if _, err := ctrl.Exec(ctx, "select pg_advisory_unlock(6)"); err != nil {
		t.Fatal(err)
	}
	if err := <-bErr; err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "57014" {
			t.Fatalf("a's cancel request canceled b's query: %v", err)
		}
		t.Fatalf("b's query: %v", err)
	}
}

func TestAFailedSetLeavesTheClientsParameterAsItWas(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	// One server, so both clients take turns on it.
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	b := ferrytest.Connect(t, ctx, f.AppDSN())
	var def string
	if err := a.QueryRow(ctx, "show timezone").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if def == "America/New_York" {
		t.Fatalf("the server default time zone is already %s", def)
	}

	_, err := a.Exec(ctx, "set timezone to 'No/Such_Zone'")
	expectPgError(t, err, "22023")
	if _, err := b.Exec(ctx, "set timezone to 'America/New_York'"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var gotA, gotB string
		if err := a.QueryRow(ctx, "show timezone").Scan(&gotA); err != nil {
			t.Fatal(err)
		}
		if err := b.QueryRow(ctx, "show timezone").Scan(&gotB); err != nil {
			t.Fatal(err)
		}
		if gotA != def || gotB != "America/New_York" {
			t.Fatalf("a (whose SET failed) sees %q, want %q; b sees %q, want America/New_York", gotA, def, gotB)
		}
	}
}
