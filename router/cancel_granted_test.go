package router_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	ferrytest.ChoosesItsRelayMode(t)
	cancelAtFault(t, "lent", false)
}

// cancelAtFault sends the CancelRequest of an INSERT queued for the only
// server connection of its pool when the session reaches the fault point
// where (after the holder's COMMIT grants it the server), relay loop off
// and on, by the simple and the extended protocol, and checks that it
// ends as PostgreSQL ends an INSERT cancelled while it waits for a lock:
// 57014, the INSERT never commits, the session goes on. With locked, the
// INSERT, once sent, waits for a lock held straight on PostgreSQL, so
// that a cancel that reaches the server finds it running.
func cancelAtFault(t *testing.T, where string, locked bool) {
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
				app := "pgferry-cancelled-at-" + where
				holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
				victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
				if loop {
					allIntoTheLoop(t, ctx, f, holder, victim)
				}
				if _, err := holder.Exec(ctx, "create table queued_cancel (x int)").ReadAll(); err != nil {
					t.Fatal(err)
				}
				var locker *pgconn.PgConn
				if locked {
					locker = ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
					if _, err := locker.Exec(ctx, "begin; lock table queued_cancel").ReadAll(); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
					t.Fatal(err)
				}
				pid, key := victim.PID(), binary.BigEndian.Uint32(victim.SecretKey()) // (pgferry's keys are 4 bytes)
				sent := make(chan struct{})
				undo := router.SetFaultFor(f.Server, func(a, at string) {
					if a == app && at == where {
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
				// comes at the fault point.
				if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
					t.Fatal(err)
				}
				var got string
				select {
				case err := <-done:
					got, _, _ = pgCode(err)
				case <-time.After(20 * time.Second): // a hang guard
					t.Fatalf("the INSERT still waits 20 s after its cancel at %q", where)
				}
				select {
				case <-sent:
				default:
					t.Fatal("the statement was never granted a server after a wait")
				}
				if got != want[extended] {
					t.Fatalf("the INSERT cancelled at %q: got %q, PostgreSQL answers %q to one cancelled while it waits for a lock", where, got, want[extended])
				}
				if locker != nil {
					if _, err := locker.Exec(ctx, "commit").ReadAll(); err != nil {
						t.Fatal(err)
					}
				}
				res, err := victim.Exec(ctx, "select count(*) from queued_cancel").ReadAll()
				if err != nil || string(res[0].Rows[0][0]) != "0" {
					t.Fatalf("after the cancel, the session goes on and the INSERT never committed: %v, %v", res, err)
				}
			})
		}
	}
}
