package router_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// withRuntimeParams returns dsn's configuration with the startup
// parameters kv, keys as written.
func withRuntimeParams(t *testing.T, dsn string, kv ...string) *pgx.ConnConfig {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		cc.RuntimeParams[kv[i]] = kv[i+1]
	}
	return cc
}

// GUC names are case-insensitive: a startup key written in another case
// than the server reports it (datestyle for DateStyle) with the value the
// pool's servers greet with needs no server at login, as DateStyle does.
// It used to be tried on a server first (paramsconfirm.go), a round trip
// per login with a new value: here, the only server is busy, and the
// login waited for it until query_wait_timeout.
func TestAStartupKeyInAnotherCaseWithTheGreetingsValueNeedsNoServerAtLogin(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(map[bool]string{false: "relay loop off", true: "relay loop on"}[loop], func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 1)
			cfg.RelayLoop = loop
			cfg.QueryWaitTimeout = configs.Duration(time.Second)
			f := ferrytest.Start(t, cfg)
			holder := ferrytest.Connect(t, ctx, f.AppDSN())
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var dateStyle, timeZone string
			if err := tx.QueryRow(ctx, "select current_setting('DateStyle'), current_setting('TimeZone')").Scan(&dateStyle, &timeZone); err != nil {
				t.Fatal(err)
			}
			conn, err := pgx.ConnectConfig(ctx, withRuntimeParams(t, f.AppDSN(), "datestyle", dateStyle, "TIMEZONE", timeZone))
			if err != nil {
				t.Fatalf("a login with datestyle and TIMEZONE as the server greets with, its only server busy: %v", err)
			}
			conn.Close(ctx)
		})
	}
}

// Two clients that write an untracked startup key in two cases set one
// parameter: each sees its own value on the server connection they take
// turns on. The two spellings were two parameters to pgferry, and the
// second client's replay reset the first spelling, its own value with it.
func TestTwoSpellingsOfAStartupKeyAreOneParameter(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	a := ferrytest.ConnectConfig(t, ctx, withRuntimeParams(t, f.AppDSN(), "Statement_Timeout", "5s"))
	b := ferrytest.ConnectConfig(t, ctx, withRuntimeParams(t, f.AppDSN(), "statement_timeout", "1234ms"))
	for round := range 3 {
		for _, c := range []struct {
			conn *pgx.Conn
			want string
		}{{a, "5s"}, {b, "1234ms"}} {
			var got string
			if err := c.conn.QueryRow(ctx, "show statement_timeout").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("round %d: a client that sent statement_timeout %s sees %s", round, c.want, got)
			}
		}
	}
}
