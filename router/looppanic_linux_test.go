//go:build linux && !pgferry_nopark

package router_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

func TestASessionWhoseLoopTurnPanicsEndsWithAnInternalErrorItsServerDestroyedAndTheLoopServesTheOthers(t *testing.T) {
	skipWithoutLoop(t)
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-turn-panic"
	doomed := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name="+app)
	other := ferrytest.Connect(t, ctx, f.AppDSN())

	// Both clients go over to the loop; the doomed one then holds a server
	// in an open transaction.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := doomed.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
		if entries, _ := loopCounters(t, f); entries >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two clients did not both enter the relay loop")
		}
	}
	if _, err := doomed.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := doomed.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	destroyedBefore := f.Pool(t, "app").Stat.Destroyed

	undo := router.PanicInLoopTurns(app)
	defer undo()
	_, err := doomed.Exec(ctx, "select 2")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != protocol.SQLStateInternalError {
		t.Fatalf("the client whose turn panicked got %v; want an ErrorResponse with SQLSTATE %s", err, protocol.SQLStateInternalError)
	}
	if !strings.Contains(f.Logs(), "session panicked") {
		t.Fatal("the panic was not logged")
	}

	// The loop goes on serving the other client, and the doomed client's
	// server, in an unknown state, was destroyed, not lent again.
	for i := 0; i < 20; i++ {
		var n int
		if err := other.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d of the other client after the panic: %d, %v", i, n, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := f.Pool(t, "app").Stat
		if st.Destroyed == destroyedBefore+1 && st.Active == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool after the panic: %+v; want the doomed client's server destroyed (%d destroyed before) and none lent", st, destroyedBefore)
		}
	}
}
