package router_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// startReplicated starts a primary with one streaming replica for one test.
func startReplicated(t testing.TB) (primary, replica *pgtest.Cluster) {
	t.Helper()
	p, err := pgtest.Start(pgtest.Options{Replication: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	r, err := p.StartReplica(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return p, r
}

func replicaConfig(t testing.TB, primary, replica *pgtest.Cluster, tweak func(*configs.Database)) *configs.Config {
	cfg := ferrytest.Config(t, primary)
	db := cfg.Databases["app"]
	db.Replicas = []configs.Replica{{Host: replica.Host, Port: replica.Port, Weight: 1}}
	db.LagCheckInterval = configs.Duration(100 * time.Millisecond)
	db.MaxReplicaLagBytes = 1 << 20
	db.MaxReplicaLag = configs.Duration(5 * time.Second)
	db.ReadYourWrites = 0
	db.ReadOnlyAlias = "app_ro"
	if tweak != nil {
		tweak(&db)
	}
	cfg.Databases["app"] = db
	return cfg
}

// hostListConfig is pgferry in front of primary with replica listed as a
// second host, the way a client names an HA pair.
func hostListConfig(t testing.TB, primary, replica *pgtest.Cluster) *configs.Config {
	cfg := ferrytest.Config(t, primary)
	db := cfg.Databases["app"]
	db.Host = fmt.Sprintf("%s:%d,%s:%d", primary.Host, primary.Port, replica.Host, replica.Port)
	cfg.Databases["app"] = db
	return cfg
}

// failOver stops primary once replica has everything (crashPrimary) and
// promotes replica.
func failOver(t *testing.T, ctx context.Context, primary, replica *pgtest.Cluster) {
	t.Helper()
	crashPrimary(t, ctx, primary, replica)
	if err := replica.Promote(); err != nil {
		t.Fatal(err)
	}
}

// crashPrimary waits until replica has replayed everything primary wrote
// (an immediate stop loses WAL not yet sent: on a loaded machine that was
// a test's table), then stops primary immediately.
func crashPrimary(t *testing.T, ctx context.Context, primary, replica *pgtest.Cluster) {
	t.Helper()
	written, err := primary.QueryInt(ctx, "select (pg_current_wal_lsn() - '0/0')::bigint")
	if err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the replica to replay everything", func() (bool, error) {
		replayed, err := replica.QueryInt(ctx, "select coalesce((pg_last_wal_replay_lsn() - '0/0')::bigint, 0)")
		return replayed >= written, err
	})
	if err := primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
}

// whereReadOnlyRuns reports the port of the server a READ ONLY transaction
// ran on.
func whereReadOnlyRuns(ctx context.Context, t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var port int
	if err := tx.QueryRow(ctx, "select inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return port
}

func TestReadOnlyTransactionsGoToAFreshReplicaAndWritesToThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, nil))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())

	ferrytest.Eventually(t, 20*time.Second, "a read-only transaction runs on the replica", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})
	admin := ferrytest.Connect(t, ctx, f.DSN("pgbouncer", "admin", "admin-secret")+" default_query_exec_mode=simple_protocol")
	replicaState := func() string {
		var state string
		var lag float64
		if err := admin.QueryRow(ctx, "SHOW REPLICAS").Scan(new(string), new(string), new(string), &state, &lag,
			new(float64), new(int), new(int), new(int), new(int), new(string), new(string)); err != nil {
			t.Fatal(err)
		}
		return state
	}
	if s := replicaState(); s != "in rotation" {
		t.Fatalf("SHOW REPLICAS says %q, want in rotation", s)
	}
	var port int
	if err := conn.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil || port != primary.Port {
		t.Fatalf("an ordinary transaction ran on port %d (%v), want the primary %d", port, err, primary.Port)
	}
	// A write inside a READ ONLY transaction gets the server's own error.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "create table nope (x int)")
	if code, _, _ := pgCode(err); code != "25006" {
		t.Fatalf("write in a read-only transaction: %v, want SQLSTATE 25006", err)
	}
	tx.Rollback(ctx)

	// The read-only alias sends every transaction of the session to replicas.
	ro := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
	var inRecovery bool
	if err := ro.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("app_ro session ran on a primary (%v)", err)
	}

	// Lag: pause replay and write on the primary; reads go to the primary.
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "create table lagging as select g from generate_series(1, 200000) g"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "reads leave the lagging replica", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == primary.Port, nil
	})
	if s := replicaState(); s != "lagging" {
		t.Fatalf("SHOW REPLICAS says %q for a paused replica, want lagging", s)
	}
	if err := replica.Exec(ctx, "select pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the caught-up replica rejoins", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})

	// Replica down: reads keep working on the primary; back up: it rejoins.
	if err := replica.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		whereReadOnlyRuns(ctx, t, conn) // must not fail
	}
	if err := replica.Restart(); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the restarted replica rejoins", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})
}

func TestReadYourWritesSendsReadsAfterACommitToThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) {
		db.ReadYourWrites = configs.Duration(30 * time.Second)
		db.MaxReplicaLagBytes = 1 << 30
		db.MaxReplicaLag = configs.Duration(time.Hour)
	}))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	reader := ferrytest.Connect(t, ctx, f.AppDSN())
	ferrytest.Eventually(t, 20*time.Second, "a fresh client's reads use the replica", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, reader) == replica.Port, nil
	})
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	defer replica.Exec(context.Background(), "select pg_wal_replay_resume()")
	if _, err := conn.Exec(ctx, "create table ryw (x int)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := conn.Exec(ctx, fmt.Sprintf("insert into ryw values (%d)", i)); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, "select count(*) from ryw").Scan(&n); err != nil || n != i+1 {
			t.Fatalf("read after write saw %d rows (%v), want %d", n, err, i+1)
		}
		tx.Rollback(ctx)
	}
}

func TestWritesFollowThePrimaryAfterAPromotion(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, hostListConfig(t, primary, replica))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table failover (x int)"); err != nil {
		t.Fatal(err)
	}
	failOver(t, ctx, primary, replica)
	// The first statement may fail with the lost connection; the same
	// client then writes on the new primary.
	ferrytest.Eventually(t, 20*time.Second, "writes resume on the promoted replica", func() (bool, error) {
		var port int
		if err := conn.QueryRow(ctx, "insert into failover values (1) returning inet_server_port()").Scan(&port); err != nil {
			return false, err
		}
		return port == replica.Port, nil
	})
}

func TestAReadRoutedToAReplicaThatJustWentDownRunsOnThePrimary(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	primary, replica := startReplicated(t)
	cfg := replicaConfig(t, primary, replica, func(db *configs.Database) {
		// The lag monitor looks once a minute: it cannot notice the
		// replica going down before the reads below are routed.
		db.LagCheckInterval = configs.Duration(time.Minute)
	})
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	ferrytest.Eventually(t, 20*time.Second, "the replica in rotation", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})
	if err := replica.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if port := whereReadOnlyRuns(ctx, t, conn); port != primary.Port {
			t.Fatalf("read %d ran on port %d with the replica down, want the primary %d", i, port, primary.Port)
		}
	}
}

// TestClientsBetweenTransactionsSeeNoErrorAcrossAFailover stops the primary
// immediately and promotes its standby a moment later, as Azure's HA does,
// while clients sit between transactions: a writer, one with a named
// prepared statement and one with a tracked search_path. Their next
// transactions, started while no host is writable, wait and then run on the
// new primary with their session state, with no error.
func TestClientsBetweenTransactionsSeeNoErrorAcrossAFailover(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, hostListConfig(t, primary, replica))
	ctx := testContext(t)
	writer := ferrytest.Connect(t, ctx, f.AppDSN())
	prepared := ferrytest.Connect(t, ctx, f.AppDSN())
	pathed := ferrytest.Connect(t, ctx, f.AppDSN())
	listener := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := listener.Exec(ctx, "listen fo_chan"); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Exec(ctx, "create schema fo; create table fo.t (x int); create table fo_acked (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pathed.Exec(ctx, "set search_path = fo"); err != nil {
		t.Fatal(err)
	}
	var port int
	if err := prepared.QueryRow(ctx, "select inet_server_port() + $1::int", 0).Scan(&port); err != nil || port != primary.Port {
		t.Fatalf("prepared statement before the failover: %d, %v", port, err)
	}
	crashPrimary(t, ctx, primary, replica)
	// Each client starts its next transaction with no writable host.
	type result struct {
		who  string
		port int
		err  error
	}
	results := make(chan result, 3)
	go func() {
		var p int
		err := writer.QueryRow(ctx, "insert into fo_acked values (1) returning inet_server_port()").Scan(&p)
		results <- result{"writer", p, err}
	}()
	go func() {
		var p int
		err := prepared.QueryRow(ctx, "select inet_server_port() + $1::int", 0).Scan(&p)
		results <- result{"prepared statement", p, err}
	}()
	go func() {
		var p int
		err := pathed.QueryRow(ctx, "insert into t values (1) returning inet_server_port()").Scan(&p)
		results <- result{"search_path", p, err}
	}()
	ferrytest.Eventually(t, 10*time.Second, "the clients to be held for a server", func() (bool, error) {
		return f.Pool(t, "app").ClientsWaiting == 3, nil
	})
	promoting := time.Now()
	if err := replica.Promote(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pg_ctl promote took %v", time.Since(promoting).Round(time.Millisecond))
	for range 3 {
		r := <-results
		if r.err != nil || r.port != replica.Port {
			t.Errorf("%s across the failover: port %d, %v; want the new primary %d and no error", r.who, r.port, r.err, replica.Port)
		}
	}
	t.Logf("held transactions ran %v after the promotion began", time.Since(promoting).Round(time.Millisecond))

	// The listening client's subscription follows it to the new primary
	// (pgferry's listener connection reconnects and listens again).
	notifier := ferrytest.Connect(t, ctx, replica.SuperDSN("app"))
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := listener.WaitForNotification(wctx)
		got <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := notifier.Exec(ctx, "notify fo_chan, 'after failover'"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("the listening client got no notification from the new primary: %v", err)
			}
			return
		case <-tick.C:
		}
	}
}

func TestReadYourWritesByLSNWaitsForAReplicaThatReplayedTheCommit(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) {
		db.ReadYourWritesLSN = true
		db.MaxReplicaLagBytes = 1 << 30
		db.MaxReplicaLag = configs.Duration(time.Hour)
	}))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table ryw_lsn (x int)"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the writer's reads to use the replica once it replayed the table", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	defer replica.Exec(context.Background(), "select pg_wal_replay_resume()")
	for i := 0; i < 5; i++ {
		if _, err := conn.Exec(ctx, fmt.Sprintf("insert into ryw_lsn values (%d)", i)); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		var n, port int
		if err := tx.QueryRow(ctx, "select count(*), inet_server_port() from ryw_lsn").Scan(&n, &port); err != nil || n != i+1 {
			t.Fatalf("read after write saw %d rows on port %d (%v), want %d", n, port, err, i+1)
		}
		tx.Rollback(ctx)
	}
	// Another client, which wrote nothing, still reads from the replica.
	// (Eventually: on a loaded machine one 100 ms probe can time out and
	// take the replica out of rotation until the next one.)
	ferrytest.Eventually(t, 20*time.Second, "a client that never wrote to read on the replica", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, other) == replica.Port, nil
	})
	if err := replica.Exec(ctx, "select pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the writer's reads to return to the replica once it replayed the writes", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, conn) == replica.Port, nil
	})
}

// TestAPlannedSwitchoverWithPauseAndResumeCostsClientsNoError is the
// operator's sequence: PAUSE (transactions finish, new ones wait), stop the
// primary and promote the standby, RESUME. Writers running transactions
// throughout see no error, and every acknowledged insert is on the new
// primary.
func TestAPlannedSwitchoverWithPauseAndResumeCostsClientsNoError(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, hostListConfig(t, primary, replica))
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table switchover (writer int, n int)"); err != nil {
		t.Fatal(err)
	}
	const writers = 4
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		acked    [writers]atomic.Int64
		firstErr = make(chan error, writers)
	)
	for w := range writers {
		conn := ferrytest.Connect(t, ctx, f.AppDSN())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := conn.Exec(ctx, "insert into switchover values ($1, $2)", w, n); err != nil {
					firstErr <- fmt.Errorf("writer %d, insert %d: %w", w, n, err)
					return
				}
				acked[w].Store(int64(n))
			}
		}()
	}
	ferrytest.Eventually(t, 20*time.Second, "the writers to get going", func() (bool, error) {
		return acked[0].Load() > 10 && acked[writers-1].Load() > 10, nil
	})
	admin := ferrytest.ConnectPgConn(t, ctx, f.DSN("pgbouncer", "admin", "admin-secret"))
	if err := admin.Exec(ctx, "PAUSE").Close(); err != nil {
		t.Fatalf("PAUSE: %v", err)
	}
	// Paused: nothing is in flight, so the standby has every commit once
	// it has replayed the primary's last position.
	failOver(t, ctx, primary, replica)
	if err := admin.Exec(ctx, "RESUME").Close(); err != nil {
		t.Fatalf("RESUME: %v", err)
	}
	var before [writers]int64
	for w := range writers {
		before[w] = acked[w].Load()
	}
	ferrytest.Eventually(t, 20*time.Second, "every writer to write on the new primary", func() (bool, error) {
		for w := range writers {
			if acked[w].Load() < before[w]+5 {
				return false, nil
			}
		}
		return true, nil
	})
	close(stop)
	wg.Wait()
	select {
	case err := <-firstErr:
		t.Fatalf("a client saw an error across the switchover: %v", err)
	default:
	}
	check := ferrytest.Connect(t, ctx, replica.SuperDSN("app"))
	for w := range writers {
		var n int64
		if err := check.QueryRow(ctx, "select count(*) from switchover where writer = $1", w).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < acked[w].Load() {
			t.Errorf("writer %d: %d acknowledged inserts, %d on the new primary", w, acked[w].Load(), n)
		}
	}
}
