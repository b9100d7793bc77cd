package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A readonly_alias session's Parse of a statement that would let it write,
// its parameters' types left to the server (OID 0, as libpq's
// PQexecParams and psycopg send them), is refused with 25006 at its
// Execute: the statement pgferry parses in its place takes the same
// parameters, of a type it can be parsed with, not 42P18 (could not
// determine data type of parameter $1).
func TestAReadOnlyAliasSessionsRefusedParseWithUntypedParametersFailsWith25006(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	db := cfg.Databases["app"]
	db.ReadOnlyAlias = "app_ro"
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	alias := ferrytest.ConnectPgConn(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
	res := alias.ExecParams(ctx, "select set_config('default_transaction_read_only', $1, false)",
		[][]byte{[]byte("off")}, []uint32{0}, nil, nil).Read()
	if code, _, _ := pgCode(res.Err); code != "25006" {
		t.Fatalf("set_config with an untyped parameter: %v; want SQLSTATE 25006", res.Err)
	}
}
