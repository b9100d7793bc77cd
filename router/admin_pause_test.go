package router_test

// PAUSE, KILL and RESUME together, as PgBouncer 1.25.2 answers them
// (admin.c admin_cmd_pause, admin_cmd_kill, admin_cmd_resume; each case
// was run against the 1.25.2 binary by hand): a pause of the whole pooler
// and a database's own pause are two things, and KILL is refused during
// the first.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestAdminConsoleKillWhileThePoolerIsPausedIsRefused: PgBouncer refuses
// KILL, KILL db and PAUSE db with "already suspended/paused" once PAUSE
// has paused the whole pooler, also while that PAUSE still waits for the
// servers in use, and kills nobody; its clients carry on after RESUME.
func TestAdminConsoleKillWhileThePoolerIsPausedIsRefused(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	// The PAUSE waits for app's transaction: the pooler is paused from
	// its start.
	pauser := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	paused := make(chan error, 1)
	go func() {
		_, err := adminExec(pauser, "PAUSE")
		paused <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the PAUSE to begin", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW POOLS").row("database", "app")["paused"] == "1", nil
	})
	refused := func(when string) {
		t.Helper()
		for _, cmd := range []string{"KILL", "KILL app", "PAUSE app"} {
			_, err := adminExec(pc, cmd)
			if err == nil {
				t.Fatalf("%s %s succeeded", cmd, when)
			}
			wantPgError(t, err, "08P01", "already suspended/paused")
		}
		if mustAdmin(t, pc, "SHOW CLIENTS").row("user", ferrytest.User) == nil {
			t.Fatalf("a KILL refused %s ended the client", when)
		}
	}
	refused("while PAUSE waits")
	if _, err := app.Exec(ctx, "commit"); err != nil {
		t.Fatalf("the transaction PAUSE waited for: %v", err)
	}
	select {
	case err := <-paused:
		if err != nil {
			t.Fatalf("PAUSE: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("PAUSE did not end with the transaction")
	}
	refused("once paused")
	state := func() string {
		s := mustAdmin(t, pc, "SHOW STATE")
		return s.row("key", "active")["value"] + "/" + s.row("key", "paused")["value"]
	}
	if s := state(); s != "no/yes" {
		t.Errorf("SHOW STATE active/paused = %s while paused, want no/yes", s)
	}
	mustAdmin(t, pc, "RESUME")
	var n int
	if err := app.QueryRow(ctx, "select 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after RESUME: %d, %v", n, err)
	}
	// Not paused any more: KILL app kills, and app stays paused until
	// RESUME app, which the pooler's SHOW STATE does not count.
	mustAdmin(t, pc, "KILL app")
	if _, err := app.Exec(ctx, "select 3"); err == nil {
		t.Fatal("the client KILL app killed still runs queries")
	}
	if s := state(); s != "yes/no" {
		t.Errorf("SHOW STATE active/paused = %s after KILL app, want yes/no", s)
	}
	mustAdmin(t, pc, "RESUME app")
}

// TestAdminConsoleResumeLeavesADatabasePausedOnItsOwnPaused: a database
// paused on its own (PAUSE db, KILL) stays paused through a PAUSE and
// RESUME of the whole pooler, which do not refuse it, until RESUME db; a
// RESUME db during a PAUSE of the whole pooler, of a database not paused on
// its own, is refused and resumes nothing.
func TestAdminConsoleResumeLeavesADatabasePausedOnItsOwnPaused(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	cfg.Databases["other"] = cfg.Databases["app"]
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	other := ferrytest.Connect(t, ctx, f.DSN("other", ferrytest.User, ferrytest.Password))
	for _, c := range []*pgx.Conn{app, other} {
		if _, err := c.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, pc, "PAUSE app")
	mustAdmin(t, pc, "PAUSE app") // again: PgBouncer answers PAUSE too
	mustAdmin(t, pc, "PAUSE")
	_, err := adminExec(pc, "RESUME other")
	wantPgError(t, err, "08P01", "database other is not paused")
	mustAdmin(t, pc, "RESUME")

	if _, err := other.Exec(ctx, "select 2"); err != nil {
		t.Fatalf("other after RESUME: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := app.Exec(context.Background(), "select 2")
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "app's client to wait", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW POOLS").row("database", "app")["cl_waiting"] == "1", nil
	})
	select {
	case err := <-done:
		t.Fatalf("app ran a query after RESUME, though paused on its own: %v", err)
	default:
	}
	mustAdmin(t, pc, "RESUME app")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("app still paused after RESUME app")
	}
}
