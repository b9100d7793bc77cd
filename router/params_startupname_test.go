package router_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestAStartupParameterTheServerRefusesIsNamedAsTheClientWroteIt: pgferry
// hands a startup parameter PgBouncer does not know to the server, as
// PostgreSQL would take it, and refuses the login with the server's
// answer. It tried the values in SETs under its own spelling of their
// names (A-Z lowered, or DateStyle, IntervalStyle, TimeZone), so the
// FATAL named the parameter otherwise than PostgreSQL's own refusal of the
// same startup packet: unrecognized configuration parameter "foobar" for
// a client that sent FooBar, invalid value for parameter "work_mem" for
// Work_Mem (PostgreSQL names it as it came). Each login is made straight
// to PostgreSQL and through pgferry, and must get the same FATAL.
func TestAStartupParameterTheServerRefusesIsNamedAsTheClientWroteIt(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{"FooBar", "1"},
		{"Work_Mem", "abc"},
		{"options", "-c FooBar=1"},
		{"options", "--Work_Mem=abc"},
		{"timezone", "Not/AZone"},
		{"IS_superuser", "on"},
		{"Transaction_Read_Only", "x"},
	}
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	refusal := func(t *testing.T, dsn string, kv []string) string {
		t.Helper()
		ctx := testContext(t)
		conn, err := pgx.ConnectConfig(ctx, withRuntimeParams(t, dsn, kv...))
		if err == nil {
			conn.Close(ctx)
			return "logged in"
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("login: %v", err)
		}
		return fmt.Sprintf("%s %s %s", pe.Severity, pe.Code, pe.Message)
	}
	for _, kv := range cases {
		t.Run(kv[0]+"="+kv[1], func(t *testing.T) {
			want := refusal(t, cluster.DSN("app", ferrytest.User, ferrytest.Password), kv)
			if got := refusal(t, f.AppDSN(), kv); got != want {
				t.Errorf("through pgferry %q, straight to PostgreSQL %q", got, want)
			}
		})
	}
}
