package router_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// hHijack logs in through f with pgconn and takes over the raw socket, so
// the test can send frames without waiting for answers.
func hHijack(t *testing.T, ctx context.Context, f *ferrytest.Ferry) net.Conn {
	t.Helper()
	pc, err := pgconn.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	return hj.Conn
}

// hCreateSink creates table sink (x int) in the test database through f,
// on a connection closed before returning.
func hCreateSink(t *testing.T, ctx context.Context, f *ferrytest.Ferry) {
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

func hPool(t *testing.T, f *ferrytest.Ferry, database string) (active, waiting, clientsWaiting int, found bool) {
	t.Helper()
	for _, p := range f.Server.Snapshot().Pools {
		if p.Database == database {
			return p.Stat.Active, p.Stat.Waiting, p.ClientsWaiting, true
		}
	}
	return 0, 0, 0, false
}

func TestClientDisconnectsAtEveryStageLeaveNoBusyServerAndThePoolServes(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg, db := hConfig(t)
	hPoolSize(cfg, "app", 1)
	// PostgreSQL notices a vanished client during a running query only
	// when it checks the socket (client_connection_check_interval,
	// PostgreSQL 14+); without it pg_sleep runs to its end after pgferry
	// closed the server connection, exactly as with a direct client.
	if err := cluster.Exec(ctx, "alter database "+db+" set client_connection_check_interval = '100ms'"); err != nil {
		t.Fatal(err)
	}
	if _, err := hBusyBackends(ctx, db); err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, cfg)
	hCreateSink(t, ctx, f)

	stages := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"after the TCP connect, before sending anything", func(t *testing.T) {
			hDial(t, f).Close()
		}},
		{"in the middle of the startup packet", func(t *testing.T) {
			c := hDial(t, f)
			startup := hStartupFrame(t, ferrytest.User, "app")
			hWrite(t, c, startup[:7])
			c.Close()
		}},
		{"after the startup packet, before the password", func(t *testing.T) {
			c := hDial(t, f)
			hWrite(t, c, hStartupFrame(t, ferrytest.User, "app"))
			if _, _, err := hReadFrames(c, 10*time.Second, func(fr hFrame) bool { return fr.typ == 'R' }); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}},
		{"in the middle of a query", func(t *testing.T) {
			c := hHijack(t, ctx, f)
			hWrite(t, c, hEncode(t, &pgproto3.Query{String: "select pg_sleep(60)"}))
			hWaitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(60)'")
			c.Close()
		}},
		{"in the middle of COPY FROM STDIN", func(t *testing.T) {
			c := hHijack(t, ctx, f)
			hWrite(t, c, hEncode(t, &pgproto3.Query{String: "copy sink from stdin"}))
			frames, _, err := hReadFrames(c, 10*time.Second, func(fr hFrame) bool { return fr.typ == 'G' || fr.typ == 'E' })
			if err != nil || frames[len(frames)-1].typ != 'G' {
				t.Fatalf("expected CopyInResponse, got %s (%v)", hDescribe(frames), err)
			}
			hWrite(t, c, hEncode(t, &pgproto3.CopyData{Data: []byte("1\n2\n")}))
			c.Close()
		}},
		{"while queued for a server connection", func(t *testing.T) {
			holder := hConnect(t, ctx, f.AppDSN())
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into sink values (100)"); err != nil {
				t.Fatal(err)
			}
			c := hHijack(t, ctx, f)
			hWrite(t, c, hEncode(t, &pgproto3.Query{String: "insert into sink values (200)"}))
			hEventually(t, 10*time.Second, "the second client to queue", func() (bool, error) {
				_, _, w, _ := hPool(t, f, "app")
				return w == 1, nil
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
			hWaitNoBusyBackends(t, ctx, db)
			hEventually(t, 10*time.Second, "every session to end and the pool to have nothing lent", func() (bool, error) {
				active, _, waiting, _ := hPool(t, f, "app")
				return f.Server.Snapshot().Clients == 0 && active == 0 && waiting == 0, nil
			})
			hAssertServes(t, ctx, f)
		})
	}
	hAssertNoPanic(t, f)
}

func TestServerTerminatedMidTransactionGivesTheClientAnErrorAndThePoolRefills(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg, db := hConfig(t)
	f := ferrytest.Start(t, cfg)
	conn := hConnect(t, ctx, f.AppDSN())
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
	if code, _, ok := hPgCode(err); !ok || (code != "08006" && code != "57P01") {
		t.Fatalf("got %v, want an ErrorResponse 08006 or 57P01", err)
	}
	hWaitNoBusyBackends(t, ctx, db)
	hAssertServes(t, ctx, f)
	hAssertNoPanic(t, f)
}

func TestServerTerminatedMidCopyGivesTheClientAnErrorAndThePoolRefills(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg, db := hConfig(t)
	f := ferrytest.Start(t, cfg)
	hCreateSink(t, ctx, f)
	c := hHijack(t, ctx, f)
	hWrite(t, c, hEncode(t, &pgproto3.Query{String: "copy sink from stdin"}))
	frames, _, err := hReadFrames(c, 10*time.Second, func(fr hFrame) bool { return fr.typ == 'G' || fr.typ == 'E' })
	if err != nil || frames[len(frames)-1].typ != 'G' {
		t.Fatalf("expected CopyInResponse, got %s (%v)", hDescribe(frames), err)
	}
	hWrite(t, c, hEncode(t, &pgproto3.CopyData{Data: []byte("1\n2\n")}))
	n, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query like 'copy sink%'", db)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d backends, %v; want 1", n, err)
	}
	frames, closed, err := hReadFrames(c, 15*time.Second, func(fr hFrame) bool { return fr.typ == 'Z' })
	errs := hErrors(frames)
	if len(errs) == 0 || (errs[0]['C'] != "08006" && errs[0]['C'] != "57P01") {
		t.Fatalf("got %s (closed %v, %v), want an ErrorResponse 08006 or 57P01", hDescribe(frames), closed, err)
	}
	if !closed && errs[0]['S'] == "ERROR" {
		// The session survived (transaction mode): late copy messages are
		// dropped and the next query runs on another server connection.
		hWrite(t, c, hEncode(t, &pgproto3.CopyData{Data: []byte("3\n")}))
		hWrite(t, c, hEncode(t, &pgproto3.CopyDone{}))
		hWrite(t, c, hEncode(t, &pgproto3.Query{String: "select count(*) from sink"}))
		frames, _, err := hReadFrames(c, 15*time.Second, func(fr hFrame) bool { return fr.typ == 'Z' })
		if err != nil || len(hErrors(frames)) != 0 || frames[0].typ != 'T' {
			t.Fatalf("the surviving session's next query: %s (%v)", hDescribe(frames), err)
		}
		for _, fr := range frames {
			if fr.typ == 'D' && string(fr.body[6:]) != "0" {
				t.Fatalf("rows of the interrupted COPY were committed: %q", fr.body[6:])
			}
		}
	}
	hWaitNoBusyBackends(t, ctx, db)
	hAssertServes(t, ctx, f)
	hAssertNoPanic(t, f)
}
