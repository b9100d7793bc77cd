package router_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestAStartupKeyFoldsOnlyASCIILettersAsPostgreSQLDoes: PostgreSQL's
// parameter names are case-insensitive for A-Z only (guc.c
// guc_name_compare), so a startup key with a capital outside ASCII names
// another parameter than its lower-case spelling, and one that folds to a
// known name only under Unicode's rules (ſ, U+017F, for s) names no known
// parameter. pgferry folded such keys as Unicode does: MyApp.Äx became
// myapp.äx, and Interval\u017Ftyle the server's IntervalStyle (which
// PostgreSQL refuses, 42704). Each login is made straight to PostgreSQL
// and through pgferry, and must answer alike.
func TestAStartupKeyFoldsOnlyASCIILettersAsPostgreSQLDoes(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	const query = "select coalesce(current_setting('myapp.Äx', true), '-'), coalesce(current_setting('myapp.äx', true), '-'), current_setting('IntervalStyle')"
	cases := []struct {
		name string
		kv   []string
	}{
		{"a capital outside ASCII and its lower case", []string{"MyApp.Äx", "upper", "myapp.äx", "lower"}},
		{"an ASCII capital beside one outside it", []string{"MYAPP.Äx", "upper"}},
		{"a key Unicode folds to IntervalStyle", []string{"Interval\u017Ftyle", "sql_standard"}},
		{"ASCII capitals only", []string{"MYAPP.äX", "upper"}},
	}
	answer := func(t *testing.T, dsn string, kv []string) string {
		t.Helper()
		ctx := testContext(t)
		conn, err := pgx.ConnectConfig(ctx, withRuntimeParams(t, dsn, kv...))
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				return "login: " + pe.Code + " " + pe.Message
			}
			t.Fatalf("login: %v", err)
		}
		defer conn.Close(ctx)
		var out []string
		for range 2 { // (a second transaction: the values replayed)
			var a, b, c string
			if err := conn.QueryRow(ctx, query).Scan(&a, &b, &c); err != nil {
				return "query: " + err.Error()
			}
			out = append(out, a+" "+b+" "+c)
		}
		return fmt.Sprint(out)
	}
	for _, loop := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s, relay loop %v", tc.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				cfg := ferrytest.Config(t, cluster)
				cfg.RelayLoop = loop
				f := ferrytest.Start(t, cfg)
				want := answer(t, cluster.DSN("app", ferrytest.User, ferrytest.Password), tc.kv)
				if got := answer(t, f.AppDSN(), tc.kv); got != want {
					t.Errorf("through pgferry %s, straight to PostgreSQL %s", got, want)
				}
			})
		}
	}
}
