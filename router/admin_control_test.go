package router_test

// Tests of the admin console's commands that act on pgferry: PAUSE and
// RESUME, RECONNECT, KILL, RELOAD, SHUTDOWN, WAIT_CLOSE, KILL_CLIENT. The
// console helpers are in admin_test.go.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

func TestAdminConsolePauseHoldsClientsUntilResume(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if _, err := adminExec(pc, "RESUME app"); err != nil {
		wantPgError(t, err, "08P01", "database app is not paused")
	} else {
		t.Fatal("RESUME of a running database succeeded")
	}
	if r := mustAdmin(t, pc, "PAUSE app"); r.tag != "PAUSE" {
		t.Fatalf("PAUSE tag %q", r.tag)
	}
	if p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app"); p["paused"] != "1" || p["sv_idle"] != "0" {
		t.Fatalf("paused pool = %v", p)
	}
	done := make(chan error, 1)
	go func() {
		_, err := app.Exec(context.Background(), "select 2")
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "a waiting client", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW POOLS").row("database", "app")["cl_waiting"] == "1", nil
	})
	select {
	case err := <-done:
		t.Fatalf("query ran while paused: %v", err)
	default:
	}
	mustAdmin(t, pc, "RESUME app")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query still blocked after RESUME")
	}
	_, err := adminExec(pc, "PAUSE nosuch")
	wantPgError(t, err, "08P01", "no such database: nosuch")
}

func TestAdminConsoleReconnectReplacesServerConnections(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	var before, after int
	if err := app.QueryRow(context.Background(), "select pg_backend_pid()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if r := mustAdmin(t, pc, "RECONNECT app"); r.tag != "RECONNECT" {
		t.Fatalf("tag %q", r.tag)
	}
	if err := app.QueryRow(context.Background(), "select pg_backend_pid()").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if before == after {
		t.Fatalf("server pid %d survived RECONNECT", before)
	}
}

func TestAdminConsoleKillDropsClientsAndPausesUntilResume(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, pc, "KILL app")
	ferrytest.Eventually(t, 10*time.Second, "the killed client to go", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app") == nil, nil
	})
	if _, err := app.Exec(context.Background(), "select 1"); err == nil {
		t.Fatal("killed client still works")
	}
	if p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app"); p["paused"] != "1" {
		t.Fatalf("pool after KILL = %v", p)
	}
	mustAdmin(t, pc, "RESUME app")
	app2 := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app2.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
}

// TestAdminConsoleKillWithoutADatabaseKillsEveryDatabase: PgBouncer 1.23+
// takes KILL with no database for every database but the console's
// (admin.c admin_cmd_kill; 1.18 answered "a database is required").
func TestAdminConsoleKillWithoutADatabaseKillsEveryDatabase(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if r := mustAdmin(t, pc, "KILL"); r.tag != "KILL" {
		t.Fatalf("KILL tag %q", r.tag)
	}
	_, err := app.Exec(context.Background(), "select 1")
	wantPgError(t, err, "08P01", "database removed")
	if p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app"); p["paused"] != "1" {
		t.Fatalf("pool after KILL = %v", p)
	}
	mustAdmin(t, pc, "RESUME") // the console was spared
	app2 := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app2.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
}

func TestAdminConsoleReloadAndShutdownUseTheAdminHooks(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	_, err := adminExec(pc, "RELOAD")
	wantPgError(t, err, "F0000", "RELOAD failed, see logs for additional details")
	_, err = adminExec(pc, "SHUTDOWN")
	wantPgError(t, err, "0A000", "SHUTDOWN is not available: no shutdown action is configured")

	// Each RELOAD takes its outcome from reloads; the channel also orders
	// the hook's goroutine after the test's.
	reloads := make(chan error, 1)
	shutdown := make(chan struct{}, 1)
	f.Server.SetAdminHooks(router.AdminHooks{
		Reload:   func() error { return <-reloads },
		Shutdown: func() { shutdown <- struct{}{} },
	})
	t.Cleanup(func() { f.Server.SetAdminHooks(router.AdminHooks{}) })
	reloads <- nil
	if r := mustAdmin(t, pc, "reload;"); r.tag != "RELOAD" || len(reloads) != 0 {
		t.Fatalf("RELOAD: tag %q, hook called: %v", r.tag, len(reloads) == 0)
	}
	reloads <- errors.New("bad config")
	_, err = adminExec(pc, "RELOAD")
	wantPgError(t, err, "F0000", "RELOAD failed, see logs for additional details")
	if r := mustAdmin(t, pc, "SHUTDOWN"); r.tag != "SHUTDOWN" {
		t.Fatalf("SHUTDOWN tag %q", r.tag)
	}
	select {
	case <-shutdown:
	default:
		t.Fatal("SHUTDOWN did not call the hook")
	}

	// What cmd does on that signal: a graceful shutdown ends the console
	// session with FATAL 57P01 instead of waiting for it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cut := f.Server.Shutdown(ctx); cut != 0 {
		t.Fatalf("Shutdown cut %d sessions; the admin session should have left by itself", cut)
	}
	_, err = adminExec(pc, "SHOW VERSION")
	if err == nil {
		t.Fatal("admin session survived Shutdown")
	}
}

func TestWaitCloseReturnsOnceEveryConnectionFromBeforeReconnectIsGone(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := app.Begin(ctx) // holds a server connection across RECONNECT
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, pc, "RECONNECT app")
	done := make(chan error, 1)
	go func() {
		_, err := adminExec(pc, "WAIT_CLOSE app")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("WAIT_CLOSE returned (%v) while a connection from before RECONNECT was still lent", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WAIT_CLOSE: %v", err)
	}
}

func TestKillClientEndsOneClientAndUnsupportedShowCommandsSaySo(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	victim := ferrytest.Connect(t, ctx, f.AppDSN())
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	clients := mustAdmin(t, pc, "SHOW CLIENTS")
	row := clients.row("user", "app")
	if row == nil {
		t.Fatal("no app client in SHOW CLIENTS")
	}
	bystander := ferrytest.Connect(t, ctx, f.AppDSN())
	mustAdmin(t, pc, "KILL_CLIENT "+row["ptr"])
	if err := victim.QueryRow(ctx, "select 1").Scan(new(int)); err == nil {
		t.Fatalf("the client KILL_CLIENT %s named still runs queries", row["ptr"])
	}
	if err := bystander.QueryRow(ctx, "select 1").Scan(new(int)); err != nil {
		t.Fatalf("another client was hit by KILL_CLIENT: %v", err)
	}
	if _, err := adminExec(pc, "KILL_CLIENT 0xdeadbeef"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("KILL_CLIENT of an unknown client: %v", err)
	}
	if _, err := adminExec(pc, "SHOW FDS"); err == nil || !strings.Contains(err.Error(), "SHOW FDS is not supported by pgferry") {
		t.Fatalf("SHOW FDS: %v", err)
	}
	if _, err := adminExec(pc, "SHOW PEERS"); err != nil {
		t.Fatalf("SHOW PEERS: %v", err)
	}
}

// WAIT_CLOSE returns only once the connections from before RECONNECT are
// closed, their backends gone: here one whose client left in the middle
// of a query, its Terminate sent after it (so the query runs to its end),
// is closed once the backend has run it (0.2 s: well within the 500 ms a
// close waits for its backend). WAIT_CLOSE returned as the close began,
// the old backend still running the query.
func TestWaitCloseReturnsOnlyOnceTheOldBackendsHaveExited(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	app := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	results, err := app.Exec(ctx, "begin; select pg_backend_pid()").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	pid := string(results[1].Rows[0][0])
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, admin, "RECONNECT app")
	c := hijack(t, app)
	sendRaw(t, c, append(encode(t, &pgproto3.Query{String: "select pg_sleep(0.2)"}), encode(t, &pgproto3.Terminate{})...))
	mustAdmin(t, admin, "WAIT_CLOSE app")
	n, err := queryInt(ctx, "select count(*) from pg_stat_activity where pid = "+pid)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("right after WAIT_CLOSE the backend %s of a connection from before RECONNECT is still there", pid)
	}
}
