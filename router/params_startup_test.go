package router_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A startup value the server refuses ends the login as PostgreSQL ends
// it (FATAL 22023), where it used to log the client in and fail the
// replay of its values at its first query, which then ran with the
// settings the previous client left on the server. A value the server
// takes logs in, and the next login with it is served without asking a
// server again.
func TestALoginWithAStartupValueTheServerRefusesFailsAsPostgreSQLWouldNotWithAnotherClientsSettings(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1) // every client gets the one server
	f := ferrytest.Start(t, cfg)

	// The one server, left with another client's DateStyle.
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := other.Exec(ctx, "set DateStyle to 'SQL, DMY'"); err != nil {
		t.Fatal(err)
	}

	withDateStyle := func(dsn, style string) *pgx.ConnConfig {
		cc, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cc.RuntimeParams["DateStyle"] = style
		return cc
	}
	_, direct := pgx.ConnectConfig(ctx, withDateStyle(cluster.DSN(db, ferrytest.User, ferrytest.Password), "bogus"))
	want := expectPgError(t, direct, "22023")
	conn, err := pgx.ConnectConfig(ctx, withDateStyle(f.AppDSN(), "bogus"))
	if err == nil {
		var style string
		conn.QueryRow(ctx, "show DateStyle").Scan(&style)
		conn.Close(ctx)
		t.Fatalf("a DateStyle the server refuses logged in, and its first query saw DateStyle %q", style)
	}
	got := expectPgError(t, err, "22023")
	if got.Severity != "FATAL" || got.Message != want.Message {
		t.Errorf("through pgferry: %s %s; directly: %s %s", got.Severity, got.Message, want.Severity, want.Message)
	}

	// The server was left as it was: the other client still has its
	// DateStyle, and it is idle.
	var style string
	if err := other.QueryRow(ctx, "show DateStyle").Scan(&style); err != nil || style != "SQL, DMY" {
		t.Fatalf("the other client's DateStyle is %q (%v)", style, err)
	}

	// A value the server takes, twice: the second login is served from
	// what the pool remembers.
	for i := range 2 {
		c := ferrytest.ConnectConfig(t, ctx, withDateStyle(f.AppDSN(), "German"))
		if err := c.QueryRow(ctx, "show DateStyle").Scan(&style); err != nil || !strings.HasPrefix(style, "German") {
			t.Fatalf("login %d with DateStyle German sees %q (%v)", i+1, style, err)
		}
		c.Close(ctx)
	}
}
