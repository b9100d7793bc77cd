package router_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// createSink creates table sink (x int) in the test database through f,
// on a connection closed before returning.
func createSink(t *testing.T, ctx context.Context, f *ferrytest.Ferry) {
	t.Helper()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create table sink (x int)"); err != nil {
		t.Fatal(err)
	}
}

// startCopyIn logs a client in through f, hijacks its socket, starts COPY
// sink FROM STDIN and sends two rows of it, leaving the COPY open.
func startCopyIn(t *testing.T, ctx context.Context, f *ferrytest.Ferry) net.Conn {
	t.Helper()
	c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
	sendRaw(t, c, encode(t, &pgproto3.Query{String: "copy sink from stdin"}))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'G' || fr.typ == 'E' })
	if err != nil || frames[len(frames)-1].typ != 'G' {
		t.Fatalf("expected CopyInResponse, got %s (%v)", describe(frames), err)
	}
	sendRaw(t, c, encode(t, &pgproto3.CopyData{Data: []byte("1\n2\n")}))
	return c
}

func TestClientDisconnectsAtEveryStageLeaveNoBusyServerAndThePoolServes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	// PostgreSQL notices a vanished client during a running query only
	// when it checks the socket (client_connection_check_interval,
	// PostgreSQL 14+); without it pg_sleep runs to its end after pgferry
	// closed the server connection, exactly as with a direct client.
	if err := cluster.Exec(ctx, "alter database "+db+" set client_connection_check_interval = '100ms'"); err != nil {
		t.Fatal(err)
	}
	if _, err := busyBackends(ctx, db); err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, cfg)
	createSink(t, ctx, f)

	stages := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"after the TCP connect, before sending anything", func(t *testing.T) {
			dialFerry(t, f).Close()
		}},
		{"in the middle of the startup packet", func(t *testing.T) {
			c := dialFerry(t, f)
			startup := startupMessage(t, ferrytest.User, "app")
			sendRaw(t, c, startup[:7])
			c.Close()
		}},
		{"after the startup packet, before the password", func(t *testing.T) {
			c := dialFerry(t, f)
			sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
			if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' }); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}},
		{"in the middle of a query", func(t *testing.T) {
			c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
			sendRaw(t, c, encode(t, &pgproto3.Query{String: "select pg_sleep(60)"}))
			waitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(60)'")
			c.Close()
		}},
		{"in the middle of COPY FROM STDIN", func(t *testing.T) {
			startCopyIn(t, ctx, f).Close()
		}},
		{"while queued for a server connection", func(t *testing.T) {
			holder := ferrytest.Connect(t, ctx, f.AppDSN())
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into sink values (100)"); err != nil {
				t.Fatal(err)
			}
			c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
			sendRaw(t, c, encode(t, &pgproto3.Query{String: "insert into sink values (200)"}))
			ferrytest.Eventually(t, 10*time.Second, "the second client to queue", func() (bool, error) {
				return f.Pool(t, "app").ClientsWaiting == 1, nil
			})
			c.Close()
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := holder.QueryRow(ctx, "select count(*) from sink where x = 200").Scan(&n); err != nil || n != 0 {
				t.Fatalf("the query of the client that left while queued ran anyway (%d rows, %v)", n, err)
			}
			holder.Close(ctx)
		}},
	}
	for _, st := range stages {
		t.Run(st.name, func(t *testing.T) {
			st.run(t)
			waitNoBusyBackends(t, ctx, db)
			ferrytest.Eventually(t, 10*time.Second, "every session to end and the pool to have nothing lent", func() (bool, error) {
				p := f.Pool(t, "app")
				return f.Server.Snapshot().Clients == 0 && p.Stat.Active == 0 && p.ClientsWaiting == 0, nil
			})
			assertServes(t, ctx, f)
		})
	}
	assertNoPanic(t, f)
}

func TestServerTerminatedMidTransactionGivesTheClientAnErrorAndThePoolRefills(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	n, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and state = 'idle in transaction'", db)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d backends, %v; want 1", n, err)
	}
	_, err = conn.Exec(ctx, "select 2")
	if code, _, ok := pgCode(err); !ok || (code != "08006" && code != "57P01") {
		t.Fatalf("got %v, want an ErrorResponse 08006 or 57P01", err)
	}
	waitNoBusyBackends(t, ctx, db)
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

func TestServerTerminatedMidCopyGivesTheClientAnErrorAndThePoolRefills(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	createSink(t, ctx, f)
	c := startCopyIn(t, ctx, f)
	n, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query like 'copy sink%'", db)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d backends, %v; want 1", n, err)
	}
	frames, closed, err := readFrames(c, 15*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
	errs := errorsIn(frames)
	if len(errs) == 0 || (errs[0]['C'] != "08006" && errs[0]['C'] != "57P01") {
		t.Fatalf("got %s (closed %v, %v), want an ErrorResponse 08006 or 57P01", describe(frames), closed, err)
	}
	if !closed && errs[0]['S'] == "ERROR" {
		// The session survived (transaction mode): late copy messages are
		// dropped and the next query runs on another server connection.
		sendRaw(t, c, encode(t, &pgproto3.CopyData{Data: []byte("3\n")}))
		sendRaw(t, c, encode(t, &pgproto3.CopyDone{}))
		sendRaw(t, c, encode(t, &pgproto3.Query{String: "select count(*) from sink"}))
		frames, _, err := readFrames(c, 15*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
		if err != nil || len(errorsIn(frames)) != 0 || frames[0].typ != 'T' {
			t.Fatalf("the surviving session's next query: %s (%v)", describe(frames), err)
		}
		for _, fr := range frames {
			if fr.typ == 'D' && string(fr.body[6:]) != "0" {
				t.Fatalf("rows of the interrupted COPY were committed: %q", fr.body[6:])
			}
		}
	}
	waitNoBusyBackends(t, ctx, db)
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

// TestTheQueryOfAClientThatVanishesIsCancelledAtOnce has clients run a long
// query and vanish, in transaction and session mode, through the simple
// and the extended protocol, with PostgreSQL's own check of vanished
// clients off (client_connection_check_interval = 0, the default): pgferry
// must cancel the query rather than leave it running for its 30 s.
func TestTheQueryOfAClientThatVanishesIsCancelledAtOnce(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			cfg, db := configWithOwnDatabase(t)
			cfg.PoolMode = mode
			setPoolSize(cfg, "app", 2)
			f := ferrytest.Start(t, cfg)
			for _, via := range []struct {
				name string
				msgs []pgproto3.FrontendMessage
			}{
				{"simple", []pgproto3.FrontendMessage{&pgproto3.Query{String: "select pg_sleep(30)"}}},
				{"extended", []pgproto3.FrontendMessage{parse("", "select pg_sleep(30)"), bind(""), execMsg(), syncMsg()}},
			} {
				c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
				var b []byte
				for _, m := range via.msgs {
					b = append(b, encode(t, m)...)
				}
				sendRaw(t, c, b)
				waitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(30)'")
				left := time.Now()
				c.Close()
				ferrytest.Eventually(t, 10*time.Second, "the vanished client's pg_sleep(30) to stop", func() (bool, error) {
					n, err := busyBackends(ctx, db)
					return n == 0, err
				})
				t.Logf("%s mode, %s protocol: the query stopped %v after its client vanished", mode, via.name, time.Since(left).Round(time.Millisecond))
				ferrytest.Eventually(t, 10*time.Second, "the session to end and nothing to stay lent", func() (bool, error) {
					p := f.Pool(t, "app")
					return f.Server.Snapshot().Clients == 0 && p.Stat.Active == 0, nil
				})
				assertServes(t, ctx, f)
			}
		})
	}
}
