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
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), fmt.Appendf(nil, "%q %q\n", ferrytest.User, ferrytest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(`[databases]
app = host=%s port=%d dbname=app pool_size=1 reserve_pool_size=0

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 0
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = transaction
reserve_pool_size = 2
reserve_pool_timeout = 0.05
query_wait_timeout = 2
`, cluster.Host, cluster.Port)
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	holder := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	waiter := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	err = waiter.QueryRow(ctx, "select 40 + 2").Scan(&n)
	if err == nil {
		t.Fatalf("the second client ran its query (%d) on a reserve connection; reserve_pool_size=0 on the line allows none", n)
	}
	if !strings.Contains(err.Error(), "query_wait_timeout") {
		t.Fatalf("the second client: %v, want query_wait_timeout", err)
	}
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
}
