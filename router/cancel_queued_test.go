package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client's CancelRequest for a statement queued for a server connection
// (all busy) cancels it there, as PostgreSQL cancels a statement waiting
// for a lock: the statement fails with 57014 and never runs, and the
// session goes on. pgferry dropped such a cancel (the client had no
// server to send it to), and the statement ran once a server was free:
// an INSERT the user gave up on was committed after all.
func TestACancelRequestForAQueuedStatementCancelsItAsPostgreSQLCancelsOneWaitingForALock(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	want := postgresCancelsAnInsertWaitingForALock(t, ctx)

	tests := []struct {
		name           string
		loop, extended bool
	}{
		{"queued by its goroutine", false, false},
		{"queued by its goroutine, by the extended protocol", false, true},
		{"queued by the relay loop", true, false},
		{"queued by the relay loop, by the extended protocol", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.loop {
				skipWithoutLoop(t)
			}
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			cfg.RelayLoop = tc.loop
			cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
			setPoolSize(cfg, "app", 1)
			f := ferrytest.Start(t, cfg)
			holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			victim := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			if tc.loop {
				allIntoTheLoop(t, ctx, f, holder, victim)
			}
			if _, err := holder.Exec(ctx, "create table queued_cancel (x int)").ReadAll(); err != nil {
				t.Fatal(err)
			}
			if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
				t.Fatal(err)
			}
			got := cancelQueued(t, ctx, victim, tc.extended, func() (bool, error) {
				return f.Pool(t, "app").Stat.Waiting == 1, nil
			})
			if got != want[tc.extended] {
				t.Fatalf("the cancelled queued INSERT: got %q, PostgreSQL answers %q", got, want[tc.extended])
			}
			if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
				t.Fatal(err)
			}
			var rows string
			res, err := victim.Exec(ctx, "select count(*) from queued_cancel").ReadAll()
			if err == nil {
				rows = string(res[0].Rows[0][0])
			}
			if err != nil || rows != "0" {
				t.Fatalf("after the cancel, the session goes on and the INSERT never ran: %q rows, %v", rows, err)
			}
		})
	}
}

// postgresCancelsAnInsertWaitingForALock is the reference for a cancelled
// queued statement: what PostgreSQL answers a CancelRequest for an INSERT
// waiting for a lock, by simple query (false) and by the extended
// protocol (true).
func postgresCancelsAnInsertWaitingForALock(t *testing.T, ctx context.Context) map[bool]string {
	t.Helper()
	_, db := configWithOwnDatabase(t)
	direct := func() *pgconn.PgConn {
		return ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	}
	holder, victim := direct(), direct()
	for _, sql := range []string{"create table queued_cancel (x int)", "begin; lock table queued_cancel"} {
		if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	want := map[bool]string{}
	for _, extended := range []bool{false, true} {
		want[extended] = cancelQueued(t, ctx, victim, extended, func() (bool, error) {
			n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and wait_event_type = 'Lock'", db)
			return n == 1, err
		})
		if want[extended] != "57014" {
			t.Fatalf("PostgreSQL answered a cancelled INSERT waiting for a lock with %q", want[extended])
		}
	}
	if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
	return want
}

// cancelQueued has victim run an INSERT that waits (queued reports it
// waits), by simple query or by the extended protocol, sends a
// CancelRequest for it and returns the SQLSTATE it ended with ("" if it
// succeeded).
func cancelQueued(t *testing.T, ctx context.Context, victim *pgconn.PgConn, extended bool, queued func() (bool, error)) string {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		if extended {
			done <- victim.ExecParams(ctx, "insert into queued_cancel values ($1)", [][]byte{[]byte("1")}, nil, nil, nil).Read().Err
			return
		}
		_, err := victim.Exec(ctx, "insert into queued_cancel values (1)").ReadAll()
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the INSERT waiting", queued)
	if err := victim.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		code, _, _ := pgCode(err)
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("the INSERT still waits 20 s after its cancel")
		return ""
	}
}
