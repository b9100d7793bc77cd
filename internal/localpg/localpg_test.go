package localpg

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// primary is the package's shared cluster: TLS and replication on.
var primary *Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	if FuzzWorker() {
		// Fuzz targets here need no server.
		goleak.VerifyTestMain(m)
		return
	}
	c, err := Start(Options{TLS: true, Replication: true, FromTemplate: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	primary = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		c.Stop()
		os.Exit(code)
	}))
}

// unique returns prefix with a random suffix, so tests also pass with
// -count=N against the shared cluster.
func unique(t *testing.T, prefix string) string {
	t.Helper()
	suffix, err := randomHex(4)
	if err != nil {
		t.Fatal(err)
	}
	return prefix + "_" + suffix
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// eventually polls cond every 20ms until it is true or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		}
		<-tick.C
	}
}

func TestStartCreatesAppRoleAndDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	table := unique(t, "start_check")
	if err := primary.Exec(ctx, "CREATE TABLE "+table+" (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "INSERT INTO "+table+" SELECT generate_series(1, $1::int)", 3); err != nil {
		t.Fatal(err)
	}
	n, err := primary.QueryInt(ctx, "SELECT count(*) FROM "+table)
	if err != nil || n != 3 {
		t.Fatalf("QueryInt = %d, %v; want 3", n, err)
	}

	conn := connect(t, primary.DSN(AppDatabase, AppUser, AppPassword))
	var user, db string
	var authids int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_authid").Scan(&authids); err == nil {
		t.Fatal("app user can read pg_authid; want a non-superuser")
	}
	if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != AppUser || db != AppDatabase {
		t.Fatalf("connected as %s to %s; want %s to %s", user, db, AppUser, AppDatabase)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+unique(t, "app_owned")+" (id int)"); err != nil {
		t.Fatalf("app cannot create a table in its own database: %v", err)
	}

	// The stored password is a SCRAM verifier, so clients authenticate with
	// SCRAM-SHA-256 as PgBouncer-style poolers expect.
	scram, err := primary.QueryInt(ctx, "SELECT count(*) FROM pg_authid WHERE rolname = $1 AND rolpassword LIKE 'SCRAM-SHA-256$%'", AppUser)
	if err != nil || scram != 1 {
		t.Fatalf("SCRAM verifier count = %d, %v; want 1", scram, err)
	}

	bad := primary.DSN(AppDatabase, AppUser, "wrong")
	if c, err := pgx.Connect(ctx, bad); err == nil {
		_ = c.Close(ctx)
		t.Fatal("connected with a wrong password")
	}
}

func TestTLSClusterAcceptsVerifyFull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  string
	}{
		{"ip", primary.SuperDSN("postgres") + " sslmode=verify-full sslrootcert=" + dsnValue(primary.CAFile)},
		{"localhost", strings.Replace(primary.SuperDSN("postgres"), "host=127.0.0.1", "host=localhost", 1) +
			" sslmode=verify-full sslrootcert=" + dsnValue(primary.CAFile)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := connect(t, tc.dsn)
			if n := queryInt(t, conn, "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); n != 1 {
				t.Fatalf("pg_stat_ssl.ssl = %d; want 1", n)
			}
		})
	}
	for _, f := range []string{primary.CAFile, primary.CertFile, primary.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("TLS file: %v", err)
		}
	}
}

func TestCreateRoleQuotesNameAndPassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	name := unique(t, "app@contoso.onmicrosoft.com")
	const password = `it's a "secret" \ `
	if err := primary.CreateRole(ctx, name, password); err != nil {
		t.Fatal(err)
	}
	db := primary.CreateDatabase(t, name)
	conn := connect(t, primary.DSN(db, name, password))
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if user != name {
		t.Fatalf("current_user = %q; want %q", user, name)
	}
}

func TestCreateDatabaseIsDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var names []string
	for i := range 2 {
		t.Run(fmt.Sprint("db", i), func(t *testing.T) {
			names = append(names, primary.CreateDatabase(t, AppUser))
			conn := connect(t, primary.DSN(names[i], AppUser, AppPassword))
			if _, err := conn.Exec(ctx, "CREATE TABLE per_test (id int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if names[0] == names[1] {
		t.Fatalf("database names not unique: %q", names[0])
	}
	for _, n := range names {
		left, err := primary.QueryInt(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", n)
		if err != nil || left != 0 {
			t.Fatalf("database %s after cleanup: count %d, %v; want dropped", n, left, err)
		}
	}
}

func TestAddHBAAppliesBeforeDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	blocked := unique(t, "hba_blocked")
	if err := primary.CreateRole(ctx, blocked, "pw"); err != nil {
		t.Fatal(err)
	}
	if err := primary.AddHBA("host all " + blocked + " 127.0.0.1/32 reject"); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, primary.DSN("postgres", blocked, "pw"))
	if err == nil {
		_ = c.Close(ctx)
		t.Fatal("blocked role connected; want rejected by pg_hba.conf")
	}
	if !strings.Contains(err.Error(), "pg_hba.conf rejects connection") {
		t.Fatalf("error = %v; want a pg_hba.conf rejection", err)
	}

	if err := primary.AddHBA("host all all nonsense"); err == nil {
		t.Fatal("AddHBA accepted an invalid line")
	}
	// The bad line was rolled back: the superuser still gets in over TCP.
	connect(t, primary.SuperDSN("postgres"))
}

func TestReplicaStreamsAndPromotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	replica, err := primary.StartReplica(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Stop)
	if replica.Port == primary.Port || replica.DataDir == primary.DataDir {
		t.Fatalf("replica shares port or data dir with primary: %s vs %s", replica, primary)
	}

	conn := connect(t, replica.DSN(AppDatabase, AppUser, AppPassword))
	if n := queryInt(t, conn, "SELECT pg_is_in_recovery()::int"); n != 1 {
		t.Fatalf("replica pg_is_in_recovery = %d; want 1", n)
	}
	table := unique(t, "replicated")
	if err := primary.Exec(ctx, "CREATE TABLE "+table+" AS SELECT generate_series(1, 10) AS id"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "table on replica", func() (bool, error) {
		n, err := replica.QueryInt(ctx, "SELECT count(*) FROM pg_class WHERE relname = $1", table)
		return n == 1, err
	})
	if n, err := replica.QueryInt(ctx, "SELECT count(*) FROM "+table); err != nil || n != 10 {
		t.Fatalf("replica rows = %d, %v; want 10", n, err)
	}
	if err := replica.Exec(ctx, "CREATE TABLE on_replica (id int)"); err == nil {
		t.Fatal("write on replica succeeded; want read-only error")
	}

	if err := replica.Promote(); err != nil {
		t.Fatal(err)
	}
	if n, err := replica.QueryInt(ctx, "SELECT pg_is_in_recovery()::int"); err != nil || n != 0 {
		t.Fatalf("promoted pg_is_in_recovery = %d, %v; want 0", n, err)
	}
	if err := replica.Exec(ctx, "CREATE TABLE on_promoted (id int)"); err != nil {
		t.Fatalf("write after promote: %v", err)
	}
}

func TestStartReplicaNeedsReplicationOption(t *testing.T) {
	t.Parallel()
	c, err := Start(Options{Conf: map[string]string{"application_name": "it's quoted"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if r, err := c.StartReplica(Options{}); err == nil {
		r.Stop()
		t.Fatal("StartReplica without Options.Replication succeeded")
	}
}

func TestStopImmediateThenRestartComesBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := Start(Options{HBA: []string{"host all nobody 127.0.0.1/32 reject"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if err := c.Exec(ctx, "CREATE TABLE survives AS SELECT 1 AS id"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c.SuperDSN("postgres"))

	if err := c.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection survived StopImmediate")
	}
	if _, err := pgx.Connect(ctx, c.SuperDSN("postgres")); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if !strings.Contains(c.LogTail(50), "immediate shutdown") {
		t.Errorf("log tail does not mention the immediate shutdown:\n%s", c.LogTail(20))
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.QueryInt(ctx, "SELECT count(*) FROM survives"); err != nil || n != 1 {
		t.Fatalf("after restart: %d, %v; want 1 row", n, err)
	}
	connect(t, c.DSN(AppDatabase, AppUser, AppPassword))

	base := c.baseDir
	c.Stop()
	c.Stop() // idempotent
	if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("base dir after Stop: %v; want removed", err)
	}
	if err := c.Restart(); err == nil {
		t.Fatal("Restart after Stop succeeded")
	}
}

func TestDBName(t *testing.T) {
	tests := []struct {
		name, test, want string
	}{
		{"simple", "TestFoo", "t_testfoo_abcd"},
		{"subtest", "TestFoo/bar-baz", "t_testfoo_bar_baz_abcd"},
		{"non ascii", "TestÄ", "t_test__abcd"},
		{"long", "Test" + strings.Repeat("x", 100), "t_test" + strings.Repeat("x", 52) + "_abcd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := dbName(tc.test, "abcd")
			if got != tc.want {
				t.Fatalf("dbName(%q) = %q; want %q", tc.test, got, tc.want)
			}
			if len(got) > 63 {
				t.Fatalf("len = %d; want <= 63", len(got))
			}
		})
	}
}

func TestDSNValueQuotes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"", "''"},
		{"a b", "'a b'"},
		{`it's`, `'it\'s'`},
		{`back\slash`, `'back\\slash'`},
	}
	for _, tc := range tests {
		if got := dsnValue(tc.in); got != tc.want {
			t.Errorf("dsnValue(%q) = %s; want %s", tc.in, got, tc.want)
		}
	}
}

func TestBinaryPrefersPostgres15Dir(t *testing.T) {
	if got, want := Binary("pg_ctl"), filepath.Join(binDir, "pg_ctl"); got != want {
		t.Fatalf("Binary(pg_ctl) = %s; want %s", got, want)
	}
	if err := requireBinaries("no-such-pg-program"); err == nil {
		t.Fatal("requireBinaries accepted a missing program")
	}
}
