package router_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A CancelRequest for a statement queued for a server connection that
// comes just as a server is granted to it, before the session takes it
// (the fault point "lent", where the test sends it), cancels the
// statement as one that comes while it waits does, as PostgreSQL cancels
// an INSERT waiting for a lock: 57014, the INSERT never runs, the session
// goes on. It was lost: pgferry held the statement, but the session was
// no longer queued (the relay loop's grant) or forgot the cancel as it
// linked the server (a goroutine's wait), and the INSERT ran.
func TestACancelThatComesAsAQueuedStatementIsGrantedItsServerStillCancelsIt(t *testing.T) {
	t.Parallel()
	want := postgresCancelsAnInsertWaitingForALock(t, testContext(t))
	for _, loop := range []bool{false, true} {
		for _, extended := range []bool{false, true} {
			t.Run(fmt.Sprintf("relay loop %v, extended protocol %v", loop, extended), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				ctx := testContext(t)
				cfg, _ := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
				setPoolSize(cfg, "app", 1)
				f := ferrytest.Start(t, cfg)
				const app = "pgferry-cancelled-as-granted"
				holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
				victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
				if loop {
					allIntoTheLoop(t, ctx, f, holder, victim)
				}
				if _, err := holder.Exec(ctx, "create table queued_cancel (x int)").ReadAll(); err != nil {
					t.Fatal(err)
				}
				if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
					t.Fatal(err)
				}
				pid, key := victim.PID(), binary.BigEndian.Uint32(victim.SecretKey()) // (pgferry's keys are 4 bytes)
				sent := make(chan struct{})
				undo := router.SetFaultFor(f.Server, func(a, where string) {
					if a == app && where == "lent" {
						router.ForwardCancel(f.Server, pid, key) // (as its CancelRequest would)
						close(sent)
					}
				})
				defer undo()
				done := make(chan error, 1)
				go func() {
					if extended {
						done <- victim.ExecParams(ctx, "insert into queued_cancel values ($1)", [][]byte{[]byte("1")}, nil, nil, nil).Read().Err
						return
					}
					_, err := victim.Exec(ctx, "insert into queued_cancel values (1)").ReadAll()
					done <- err
				}()
				ferrytest.Eventually(t, 10*time.Second, "the INSERT queued", func() (bool, error) {
					return f.Pool(t, "app").Stat.Waiting == 1, nil
				})
				// The holder's COMMIT grants it the server; its CancelRequest
				// comes then (the fault point).
				if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
					t.Fatal(err)
				}
				var got string
				select {
				case err := <-done:
					got, _, _ = pgCode(err)
				case <-time.After(20 * time.Second): // a hang guard
					t.Fatal("the INSERT still waits 20 s after its server was granted")
				}
				select {
				case <-sent:
				default:
					t.Fatal("the statement was never granted a server after a wait")
				}
				if got != want[extended] {
					t.Fatalf("the INSERT cancelled as its server was granted: got %q, PostgreSQL answers %q to one cancelled while it waits", got, want[extended])
				}
				res, err := victim.Exec(ctx, "select count(*) from queued_cancel").ReadAll()
				if err != nil || string(res[0].Rows[0][0]) != "0" {
					t.Fatalf("after the cancel, the session goes on and the INSERT never ran: %v, %v", res, err)
				}
			})
		}
	}
}
