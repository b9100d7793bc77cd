package router_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

func TestStalledServerNetworkMakesClientsFailInsteadOfHanging(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	relay := startProxy(t, net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
	cfg.ServerConnectTimeout = configs.Duration(500 * time.Millisecond)
	cfg.QueryWaitTimeout = configs.Duration(2 * time.Second)
	cfg.QueryTimeout = configs.Duration(500 * time.Millisecond)
	cfg.CancelWaitTimeout = configs.Duration(time.Second)
	entry := cfg.Databases["app"]
	entry.Host, entry.Port, entry.DBName = "127.0.0.1", relay.port(), db
	cfg.Databases["stalled"] = entry
	f := ferrytest.Start(t, cfg)
	dsn := f.DSN("stalled", ferrytest.User, ferrytest.Password)

	t.Run("a new client on a fresh pool gets an error while the network is stalled", func(t *testing.T) {
		relay.stall(true)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
			t.Fatal("connected through a stalled network")
		}
		if ctx.Err() != nil {
			t.Fatalf("the client hung until its own deadline: %v", err)
		}
		t.Logf("client error: %v", err)
	})

	t.Run("a running query ends with an error when the network stalls under query_timeout", func(t *testing.T) {
		relay.stall(false)
		setupCtx := testContext(t)
		var conn *pgx.Conn
		// Right after the failed login, server_login_retry makes clients
		// fail fast for a moment: retry until the pool logs in again.
		ferrytest.Eventually(t, 20*time.Second, "a client to connect through the relay again", func() (bool, error) {
			c, err := pgx.Connect(setupCtx, dsn)
			if err != nil {
				return false, err
			}
			if _, err := c.Exec(setupCtx, "select 1"); err != nil {
				c.Close(setupCtx)
				return false, err
			}
			conn = c
			return true, nil
		})
		defer conn.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "select pg_sleep(30)")
			errc <- err
		}()
		waitForBackend(t, setupCtx, db, "state = 'active' and query = 'select pg_sleep(30)'")
		relay.stall(true)
		err := <-errc
		if err == nil {
			t.Fatal("the query succeeded through a stalled network")
		}
		if ctx.Err() != nil {
			t.Fatalf("query_timeout did not end the query while the server network was stalled: the client waited for its own 20s deadline (%v)", err)
		}
		t.Logf("client error: %v", err)
	})
	relay.stall(false)
	assertNoPanic(t, f)
}

func TestBurstOf2000ClientsAgainstAPoolOfFiveLeavesNoLeakedGoroutinesOrServers(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	const clients = 2000
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 5)
	cfg.QueryWaitTimeout = configs.Duration(30 * time.Second)
	// The burst is about queuing and cleanup, not authentication: 4,000
	// SCRAM computations (client and pgferry, PBKDF2 with 4096 rounds each)
	// would dominate the run under -race on a small CI machine, so clients
	// send their password in the clear (loopback only).
	cfg.AuthType = "plain"
	f := ferrytest.Start(t, cfg)
	assertServes(t, ctx, f)
	baseline := runtime.NumGoroutine()

	var ok, refused atomic.Int64
	var mu sync.Mutex
	var unexpected []error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := func() error {
				conn, err := pgx.Connect(ctx, f.AppDSN())
				if err != nil {
					return err
				}
				defer conn.Close(context.Background())
				_, err = conn.Exec(ctx, "select 1")
				return err
			}()
			switch code, _, isPg := pgCode(err); {
			case err == nil:
				ok.Add(1)
			case isPg && ((code == "08P01" && strings.Contains(err.Error(), "query_wait_timeout")) || code == "53300"):
				refused.Add(1)
			default:
				mu.Lock()
				unexpected = append(unexpected, err)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("%d clients succeeded, %d got a documented error, %d other errors", ok.Load(), refused.Load(), len(unexpected))
	if len(unexpected) > 0 {
		t.Errorf("%d clients failed with an undocumented error; first: %v", len(unexpected), errors.Join(unexpected[:min(3, len(unexpected))]...))
	}
	if ok.Load() == 0 {
		t.Error("no client succeeded")
	}

	ferrytest.Eventually(t, 30*time.Second, "every session to end and no server to stay lent", func() (bool, error) {
		snap := f.Server.Snapshot()
		if snap.Clients != 0 {
			return false, errors.New(strconv.FormatInt(snap.Clients, 10) + " clients still connected")
		}
		for _, p := range snap.Pools {
			if p.Stat.Active != 0 || p.Stat.Waiting != 0 || p.Stat.Total > 5 {
				return false, errors.New("pool " + p.Database + ": active " + strconv.Itoa(p.Stat.Active) +
					", waiting " + strconv.Itoa(p.Stat.Waiting) + ", total " + strconv.Itoa(p.Stat.Total))
			}
		}
		return true, nil
	})
	ferrytest.Eventually(t, 30*time.Second, "the goroutine count to return to its baseline", func() (bool, error) {
		n := runtime.NumGoroutine()
		if n > baseline+20 {
			return false, errors.New(strconv.Itoa(n) + " goroutines, baseline " + strconv.Itoa(baseline))
		}
		return true, nil
	})
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

func TestClientTLSVerifyFullAcceptsOnlyClientsWithATrustedCertificate(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "verify-full")
	cfg.ClientTLSCAFile = cluster.CAFile
	f := ferrytest.Start(t, cfg)
	verify := " sslmode=verify-full sslrootcert=" + cluster.CAFile

	conn := ferrytest.Connect(t, ctx, f.AppDSN()+verify+" sslcert="+cluster.CertFile+" sslkey="+cluster.KeyFile)
	var n int
	if err := conn.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("client with a certificate: %d, %v", n, err)
	}

	if c, err := pgx.Connect(ctx, f.AppDSN()+verify); err == nil {
		c.Close(ctx)
		t.Fatal("a client without a certificate connected to verify-full")
	}
	_, err := pgx.Connect(ctx, f.AppDSN())
	if code, _, ok := pgCode(err); !ok || code != "28000" || !strings.Contains(err.Error(), "SSL required") {
		t.Fatalf("a plaintext client: got %v, want 28000 SSL required", err)
	}
}

func TestChannelBindingRequireConnectsWithSCRAMSHA256PlusOverClientTLS(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	// pgx refuses to finish SCRAM without -PLUS when channel_binding is
	// require, so a successful login proves the binding was checked.
	conn := ferrytest.Connect(t, ctx, f.AppDSN()+" sslmode=verify-full sslrootcert="+cluster.CAFile+" channel_binding=require")
	var n int
	if err := conn.QueryRow(ctx, "select 4").Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d, %v", n, err)
	}
	if _, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, "wrong")+" sslmode=verify-full sslrootcert="+cluster.CAFile+" channel_binding=require"); err == nil {
		t.Fatal("a wrong password passed SCRAM-SHA-256-PLUS")
	}
}

// TestBurstOf10000PgbenchClientsIsServedAndLeavesNothingBehind runs the
// burst from a separate process (pgbench), so the client sockets do not
// count against this process's descriptor limit: 10,000 clients connect
// at once over a pool of 20, each runs one transaction, and afterwards no
// session, lent server or goroutine is left.
func TestBurstOf10000PgbenchClientsIsServedAndLeavesNothingBehind(t *testing.T) {
	const clients = 10000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < clients+1000 {
		t.Fatalf("need %d file descriptors, can have %d", clients+1000, lim.Cur)
	}
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 20)
	cfg.QueryWaitTimeout = configs.Duration(120 * time.Second)
	cfg.AuthType = "plain" // the burst is about queuing, not PBKDF2
	f := ferrytest.Start(t, cfg)
	assertServes(t, ctx, f)
	baseline := runtime.NumGoroutine()

	script := filepath.Join(t.TempDir(), "select.sql")
	os.WriteFile(script, []byte("select 1;\n"), 0o600)
	cmd := exec.CommandContext(ctx, pgtest.Binary("pgbench"), "-n", "-c", strconv.Itoa(clients), "-j", "2", "-t", "1", "-f", script, f.AppDSN())
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, lastLines(string(out), 20))
	}
	if !strings.Contains(string(out), "number of transactions actually processed: 10000/10000") ||
		!strings.Contains(string(out), "number of failed transactions: 0 (0.000%)") {
		t.Fatalf("not every client completed its transaction:\n%s", lastLines(string(out), 20))
	}
	ferrytest.Eventually(t, 60*time.Second, "every session to end and the goroutines to return to the baseline", func() (bool, error) {
		snap := f.Server.Snapshot()
		lent := 0
		for _, p := range snap.Pools {
			lent += p.Stat.Active
		}
		g := runtime.NumGoroutine()
		// Relay workers stay parked for reuse, at most one per server
		// connection that was lent at once (pool size 20).
		if snap.Clients == 0 && lent == 0 && g <= baseline+20+20 {
			return true, nil
		}
		return false, fmt.Errorf("%d clients, %d servers lent, %d goroutines (baseline %d)", snap.Clients, lent, g, baseline)
	})
}
