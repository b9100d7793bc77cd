package router_test

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/router"
)

// skipWithoutParking skips a test where idle sessions do not park: off
// Linux, or built with pgferry_nopark.
func skipWithoutParking(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || !parkingBuilt {
		t.Skip("idle sessions are parked on Linux only")
	}
}

func TestIdleClientsAreParkedWithoutAGoroutineAndResumeWhenTheyTalk(t *testing.T) {
	skipWithoutParking(t)
	t.Parallel()
	t.Run("over plain TCP", func(t *testing.T) { t.Parallel(); idleClientsPark(t, 0) })
	t.Run("over TLS 1.3", func(t *testing.T) { t.Parallel(); idleClientsPark(t, tls.VersionTLS13) })
	t.Run("over TLS 1.2", func(t *testing.T) { t.Parallel(); idleClientsPark(t, tls.VersionTLS12) })
}

// parkWait bounds the waits for sweeps to park clients: two or three
// one-second sweeps, stretched by a loaded machine (three variants of
// this test run in parallel with the rest of the suite).
const parkWait = 30 * time.Second

// idleClientsPark runs the parking test with plain clients (tlsVersion 0)
// or clients of one TLS version.
func idleClientsPark(t *testing.T, tlsVersion uint16) {
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	if tlsVersion != 0 {
		offerClientTLS(cfg, "require")
	}
	f := ferrytest.Start(t, cfg)
	parked := func() int { return f.Server.Snapshot().ParkedClients }
	dsn := f.AppDSN()
	if tlsVersion != 0 {
		dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=require", 1)
	}
	connect := func() *pgx.Conn {
		cc, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if cc.TLSConfig != nil {
			cc.TLSConfig.MinVersion, cc.TLSConfig.MaxVersion = tlsVersion, tlsVersion
		}
		return ferrytest.ConnectConfig(t, ctx, cc)
	}

	conns := make([]*pgx.Conn, 20)
	for i := range conns {
		conns[i] = connect()
		if _, err := conns[i].Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	ferrytest.Eventually(t, parkWait, "all 20 idle clients to be parked", func() (bool, error) {
		return parked() == 20, nil
	})
	// A plain or TLS 1.3 client waits as a bare descriptor (internal/tls13
	// keeps the latter's keys); crypto/tls keeps a TLS 1.2 client's conn.
	if n, want := router.ParkedWithoutConn(f.Server), map[uint16]int{0: 20, tls.VersionTLS13: map[bool]int{true: 20}[tls13.Enabled], tls.VersionTLS12: 0}[tlsVersion]; n != want {
		t.Fatalf("%d parked clients let go of their conn; want %d", n, want)
	}
	if tlsVersion != 0 {
		// SHOW CLIENTS names the TLS of a parked client all the same.
		want := map[uint16]string{tls.VersionTLS13: "TLS 1.3/", tls.VersionTLS12: "TLS 1.2/"}[tlsVersion]
		pc := ferrytest.ConnectPgConn(t, ctx, strings.Replace(adminDSN(f), "sslmode=disable", "sslmode=require", 1))
		r := mustAdmin(t, pc, "SHOW CLIENTS")
		db, tlsCol, seen := slices.Index(r.cols, "database"), slices.Index(r.cols, "tls"), 0
		for _, row := range r.rows {
			if row[db] != "app" {
				continue
			}
			seen++
			if !strings.HasPrefix(row[tlsCol], want) {
				t.Fatalf("SHOW CLIENTS shows a parked client's TLS as %q; want %s...", row[tlsCol], want)
			}
		}
		if seen != 20 {
			t.Fatalf("SHOW CLIENTS lists %d clients of app; want 20", seen)
		}
		pc.Close(ctx)
	}

	// Every parked client is served as soon as it sends a query, with its
	// own answer (its prepared statements kept across the parking).
	for i, c := range conns {
		var n int
		if err := c.QueryRow(ctx, "select $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("client %d after parking: %d, %v", i, n, err)
		}
	}
	ferrytest.Eventually(t, parkWait, "the clients to be parked again", func() (bool, error) {
		return parked() == 20, nil
	})

	// A parked client that disconnects is noticed at once.
	conns[0].Close(ctx)
	ferrytest.Eventually(t, parkWait, "the departed client's session to end", func() (bool, error) {
		return f.Server.Snapshot().Clients == 19 && parked() == 19, nil
	})

	// A parked listener is woken for its notification.
	listener := connect()
	if _, err := listener.Exec(ctx, "listen parked_channel"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, parkWait, "the listener to be parked", func() (bool, error) {
		return parked() == 20, nil
	})
	if _, err := conns[1].Exec(ctx, "notify parked_channel, 'hello'"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil || n.Payload != "hello" {
		t.Fatalf("parked listener: %v, %v", n, err)
	}

	// A parked client's next query may arrive in several TLS records or
	// TCP segments; a large one is read in full.
	ferrytest.Eventually(t, parkWait, "the clients to be parked once more", func() (bool, error) {
		return parked() == 20, nil
	})
	long := strings.Repeat("x", 100_000)
	var got int
	if err := conns[2].QueryRow(ctx, "select length($1::text)", long).Scan(&got); err != nil || got != len(long) {
		t.Fatalf("a 100 kB query after parking: %d, %v", got, err)
	}
}

func TestAParkedClientWithoutItsConnIsListedKilledAndResumedLikeAnyOther(t *testing.T) {
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	victim := ferrytest.Connect(t, ctx, f.AppDSN())
	bystander := ferrytest.Connect(t, ctx, f.AppDSN())
	ferrytest.Eventually(t, 10*time.Second, "both clients to be parked without their conn", func() (bool, error) {
		return router.ParkedWithoutConn(f.Server) == 2, nil
	})

	// SHOW CLIENTS reads both addresses of a parked client from its
	// descriptor: the client's own port, and the port it connected to.
	client := victim.PgConn().Conn().LocalAddr().(*net.TCPAddr)
	ferryAddr := victim.PgConn().Conn().RemoteAddr().(*net.TCPAddr)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	row := mustAdmin(t, pc, "SHOW CLIENTS").row("port", strconv.Itoa(client.Port))
	if row == nil || row["addr"] != "127.0.0.1" || row["local_addr"] != "127.0.0.1" || row["local_port"] != strconv.Itoa(ferryAddr.Port) {
		t.Fatalf("SHOW CLIENTS row of the parked client = %v; want addr 127.0.0.1, local_addr 127.0.0.1, local_port %d", row, ferryAddr.Port)
	}
	if n := router.ParkedWithoutConn(f.Server); n != 2 {
		t.Fatalf("listing the clients resumed them: %d still parked without their conn", n)
	}

	// KILL_CLIENT reaches a parked client, and only that one.
	mustAdmin(t, pc, "KILL_CLIENT "+row["ptr"])
	if err := victim.QueryRow(ctx, "select 1").Scan(new(int)); err == nil {
		t.Fatal("the parked client KILL_CLIENT named still runs queries")
	}
	var n int
	if err := bystander.QueryRow(ctx, "select 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the other parked client after KILL_CLIENT: %d, %v", n, err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the other client to park again without its conn", func() (bool, error) {
		return router.ParkedWithoutConn(f.Server) == 1 && f.Server.Snapshot().Clients == 2, nil // it and the console
	})
}

func TestAClientWhoseLastQueryOutlastedTheInlineBudgetIsParkedAllTheSame(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = false // (the loop waits for a slow answer without a pump)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	// 300 ms is six inline budgets: a pump relays the end of the answer.
	if _, err := conn.Exec(ctx, "select pg_sleep(0.3)"); err != nil {
		t.Fatal(err)
	}
	if c := f.Pool(t, "app").Counters; c.PumpedLoans == 0 {
		t.Fatal("the slow query's loan was not handed to a pump; the test proves nothing")
	}
	ferrytest.Eventually(t, parkWait, "the client to be parked after its pumped loan", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	var n int
	if err := conn.QueryRow(ctx, "select 5", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 5 {
		t.Fatalf("the parked client's next query: %d, %v", n, err)
	}
}

func TestShutdownEndsParkedSessions(t *testing.T) {
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conns := make([]*pgx.Conn, 5)
	for i := range conns {
		conns[i] = ferrytest.Connect(t, ctx, f.AppDSN())
	}
	ferrytest.Eventually(t, 10*time.Second, "the idle clients to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 5, nil
	})
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if cut := f.Server.Shutdown(sctx); cut != 0 {
		t.Fatalf("shutdown had to cut %d sessions; parked ones should end on their own", cut)
	}
	if n := f.Server.Snapshot().Clients; n != 0 {
		t.Fatalf("%d client sockets still open after shutdown", n)
	}
	for i, c := range conns {
		if err := c.Ping(ctx); err == nil {
			t.Fatalf("client %d still served after shutdown", i)
		}
	}
}

func TestAParkedClientIsStillDisconnectedByClientIdleTimeout(t *testing.T) {
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.ClientIdleTimeout = configs.Duration(4 * time.Second)
	f := ferrytest.Start(t, cfg)
	idle := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := idle.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the idle client to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	ferrytest.Eventually(t, 20*time.Second, "the parked client to be disconnected by client_idle_timeout", func() (bool, error) {
		return f.Server.Snapshot().Clients == 0, nil
	})
	if _, err := idle.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the idle client can still run queries after client_idle_timeout")
	}

	// A parked client that talks before its timeout is served, and its
	// idle clock starts again.
	talker := ferrytest.Connect(t, ctx, f.AppDSN())
	ferrytest.Eventually(t, 10*time.Second, "the second client to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	var n int
	if err := talker.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("parked client before its timeout: %d, %v", n, err)
	}
}
