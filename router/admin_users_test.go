package router_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestShowUsersListsAnAuthFileUserThatNeverLoggedIn: PgBouncer 1.25.2's
// SHOW USERS lists every user of auth_file, logged in or not (seen by
// running it: a userlist line "fileuser" gives the row "fileuser | | |
// | 40 | 0 | 0 | 0" under max_user_connections = 40; this test checks it
// too where that binary is installed). pgferry listed only the users of
// [users] and those with a pool or a client, so a user of auth_file that
// had not logged in since the start was missing.
func TestShowUsersListsAnAuthFileUserThatNeverLoggedIn(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthFile = filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(cfg.AuthFile, fmt.Appendf(nil, "%q %q\n", "filer", "filer-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.MaxUserConnections = 40
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	users := mustAdmin(t, admin, "SHOW USERS")
	row := users.row("name", "filer")
	if row == nil {
		t.Fatalf("SHOW USERS has no row for the auth_file user filer: %v", users.rows)
	}
	want := map[string]string{"pool_size": "", "reserve_pool_size": "", "pool_mode": "", "max_user_connections": "40",
		"current_connections": "0", "max_user_client_connections": "0", "current_client_connections": "0"}
	for col, v := range want {
		if row[col] != v {
			t.Errorf("SHOW USERS filer: %s = %q, want %q (row %v)", col, row[col], v, row)
		}
	}

	if bin := pgBouncer125(t); bin != "" {
		// startPgBouncer's auth_file holds stats, which logs in to
		// neither.
		bouncer := startPgBouncer(t, bin)
		theirs := ferrytest.ConnectPgConn(t, ctx, bouncer.dsn("pgbouncer", "admin", "admin-secret"))
		if mustAdmin(t, theirs, "SHOW USERS").row("name", "stats") == nil {
			t.Errorf("PgBouncer 1.25.2 does not list its auth_file user stats either: this test's premise is wrong\n%s", bouncer.log())
		}
	}
}
