package router_test

// End-to-end tests of session state through pgferry: session mode, and
// in transaction mode the pinning of a client that sets session state to
// its server, or the refusal of that state when pinning is off.

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

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
		{"set_config named with Unicode escapes", simple(`select U&"set\005fconfig"('app.tenant', '42', false)`), tenant42},
		{"session advisory lock named with Unicode escapes, extended protocol", extended(`select U&"pg\005fadvisory\005flock"($1)`, 1), unlocks},
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
