package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// PAUSE, RESUME, KILL, RECONNECT and WAIT_CLOSE naming the console's own
// database answer as PgBouncer 1.25.2 does (admin.c, seen by hand on the
// same ini file): "cannot pause admin db: pgbouncer" and the like, RESUME
// "database pgbouncer is not paused", and PAUSE and KILL of it while the
// pooler is paused "already suspended/paused", as to PAUSE and KILL of a
// database that does not exist then. pgferry answered "no such database"
// to all of them.
func TestControlCommandsNamingTheConsolesDatabaseAnswerAsPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	for _, c := range []struct{ sql, msg string }{
		{"PAUSE pgbouncer", "cannot pause admin db: pgbouncer"},
		{"RESUME pgbouncer", "database pgbouncer is not paused"},
		{"KILL pgbouncer", "cannot kill admin db: pgbouncer"},
		{"RECONNECT pgbouncer", "cannot reconnect admin db: pgbouncer"},
		{"WAIT_CLOSE pgbouncer", "cannot wait in admin db: pgbouncer"},
		{"PAUSE", ""},
		{"PAUSE pgbouncer", "already suspended/paused"},
		{"KILL pgbouncer", "already suspended/paused"},
		{"PAUSE nosuch", "already suspended/paused"},
		{"KILL nosuch", "already suspended/paused"},
		{"RESUME pgbouncer", "database pgbouncer is not paused"},
		{"RESUME", ""},
	} {
		_, err := adminExec(admin, c.sql)
		if c.msg == "" {
			if err != nil {
				t.Fatalf("%s: %v", c.sql, err)
			}
			continue
		}
		t.Run(c.sql, func(t *testing.T) { wantPgError(t, err, "08P01", c.msg) })
	}
}
