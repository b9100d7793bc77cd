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

// A CancelRequest for a statement that waited for a server connection,
// coming after the session took the server it was granted and before the
// statement went to it (the fault point "granted", where the test sends
// it), cancels the statement once it runs, as PostgreSQL cancels an
// INSERT waiting for a lock: 57014, the INSERT never commits, the session
// goes on. It was dropped, the session having a server and nothing sent
// to it yet (forwardCancel: nothing running), and the INSERT ran.
func TestACancelThatComesAsAGrantedStatementIsAboutToBeSentCancelsIt(t *testing.T) {
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
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
				setPoolSize(cfg, "app", 1)
				f := ferrytest.Start(t, cfg)
				const app = "pgferry-cancelled-as-sent"
				holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
				victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
				if loop {
					allIntoTheLoop(t, ctx, f, holder, victim)
				}
				if _, err := holder.Exec(ctx, "create table queued_cancel (x int)").ReadAll(); err != nil {
					t.Fatal(err)
				}
				// The INSERT, once sent, waits for a lock held straight on
				// PostgreSQL, so that a cancel that reaches the server finds
				// it running.
				locker := ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				if _, err := locker.Exec(ctx, "begin; lock table queued_cancel").ReadAll(); err != nil {
					t.Fatal(err)
				}
				if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
					t.Fatal(err)
				}
				pid, key := victim.PID(), binary.BigEndian.Uint32(victim.SecretKey()) // (pgferry's keys are 4 bytes)
				sent := make(chan struct{})
				undo := router.SetFaultFor(f.Server, func(a, where string) {
					if a == app && where == "granted" {
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
				// comes as it is about to be sent (the fault point).
				if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
					t.Fatal(err)
				}
				var got string
				select {
				case err := <-done:
					got, _, _ = pgCode(err)
				case <-time.After(20 * time.Second): // a hang guard
					t.Fatal("the INSERT still waits for its lock 20 s after its cancel")
				}
				select {
				case <-sent:
				default:
					t.Fatal("the statement was never granted a server after a wait")
				}
				if got != want[extended] {
					t.Fatalf("the INSERT cancelled as it was about to be sent: got %q, PostgreSQL answers %q to one cancelled while it waits for a lock", got, want[extended])
				}
				if _, err := locker.Exec(ctx, "commit").ReadAll(); err != nil {
					t.Fatal(err)
				}
				res, err := victim.Exec(ctx, "select count(*) from queued_cancel").ReadAll()
				if err != nil || string(res[0].Rows[0][0]) != "0" {
					t.Fatalf("after the cancel, the session goes on and the INSERT never committed: %v, %v", res, err)
				}
			})
		}
	}
}
