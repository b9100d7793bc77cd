package router_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// secondClientBehindATransaction starts pgferry on a pgbouncer.ini whose
// [databases] line for app ends in dbLine and whose [users] section and
// [pgbouncer] globals are users and globals (query_wait_timeout is 2s),
// has a first client hold the pool's connections in a transaction, and
// returns what a second client's query got: nil when it ran.
func secondClientBehindATransaction(t *testing.T, dbLine, users, globals string) error {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), fmt.Appendf(nil, "%q %q\n", ferrytest.User, ferrytest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(`[databases]
app = host=%s port=%d dbname=app %s

[users]
%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 0
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = transaction
query_wait_timeout = 2
%s
`, cluster.Host, cluster.Port, dbLine, users, globals)
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RelayLoop = ferrytest.Config(t, cluster).RelayLoop // PGFERRY_TEST_RELAY_LOOP
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	holder := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	defer holder.Exec(ctx, "commit")
	waiter := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	return waiter.QueryRow(ctx, "select 40 + 2").Scan(&n)
}

// TestADatabaseLineWithReservePoolSizeZeroOpensNoReserveConnection: a
// pgbouncer.ini whose global reserve_pool_size is 2 and whose database line
// says reserve_pool_size=0 gets no reserve connection for that database,
// as in PgBouncer 1.25.2 (loader.c keeps the line's 0; server.c
// pool_res_pool_size takes the global only below 0). pgferry read the 0 as
// "not set": the second client, queued behind the one holding the pool's
// only server in a transaction, got a reserve connection after
// reserve_pool_timeout and ran its query, where PgBouncer keeps it waiting
// until query_wait_timeout.
func TestADatabaseLineWithReservePoolSizeZeroOpensNoReserveConnection(t *testing.T) {
	err := secondClientBehindATransaction(t, "pool_size=1 reserve_pool_size=0", "", "reserve_pool_size = 2\nreserve_pool_timeout = 0.05")
	if err == nil {
		t.Fatal("the second client ran its query on a reserve connection; reserve_pool_size=0 on the line allows none")
	}
	if !strings.Contains(err.Error(), "query_wait_timeout") {
		t.Fatalf("the second client: %v, want query_wait_timeout", err)
	}
}

// TestAUsersPoolSizesComeBeforeTheDatabases: a [users] line's pool_size
// and reserve_pool_size size that user's pools whatever the database line
// says, as PgBouncer 1.25.2's pool_pool_size and pool_res_pool_size take
// them first. pgferry ignored both keys (with a warning): with pool_size=2
// for the user over the database's 1, the second client waited until
// query_wait_timeout; with reserve_pool_size=0 for the user over the
// database's 2, it ran on a reserve connection.
func TestAUsersPoolSizesComeBeforeTheDatabases(t *testing.T) {
	t.Run("pool_size", func(t *testing.T) {
		user := fmt.Sprintf("%s = pool_size=2", ferrytest.User)
		if err := secondClientBehindATransaction(t, "pool_size=1", user, ""); err != nil {
			t.Fatalf("the second client, with room in the user's pool of 2: %v", err)
		}
	})
	t.Run("reserve_pool_size", func(t *testing.T) {
		user := fmt.Sprintf("%s = reserve_pool_size=0", ferrytest.User)
		err := secondClientBehindATransaction(t, "pool_size=1 reserve_pool_size=2", user, "reserve_pool_timeout = 0.05")
		if err == nil || !strings.Contains(err.Error(), "query_wait_timeout") {
			t.Fatalf("the second client: %v; want query_wait_timeout, the user's reserve_pool_size=0 allowing no reserve", err)
		}
	})
}
