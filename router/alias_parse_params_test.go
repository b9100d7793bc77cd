package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A readonly_alias session's Parse of a statement that would let it write,
// its parameters' types left to the server, is refused with 25006 at its
// Execute: the statement pgferry parses in its place takes as many
// parameters, of a type it can be parsed with. It was refused 42P18 (could
// not determine data type of parameter $1) for OID 0, as libpq's
// PQexecParams and psycopg send, and its Bind 08P01 (bind message supplies
// 1 parameters, but prepared statement "" requires 0) for no types at all,
// as pgx's Prepare sends.
func TestAReadOnlyAliasSessionsRefusedParseWithUntypedParametersFailsWith25006(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	db := cfg.Databases["app"]
	db.ReadOnlyAlias = "app_ro"
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name  string
		sql   string
		args  [][]byte
		types []uint32
	}{
		{name: "OID 0", sql: "select set_config('default_transaction_read_only', $1, false)", args: [][]byte{[]byte("off")}, types: []uint32{0}},
		{name: "no types", sql: "select set_config('default_transaction_read_only', $1, false)", args: [][]byte{[]byte("off")}},
		{name: "no types, $n in quotes and comments", sql: "select set_config('default_transaction_read_only', $2 /* $3 */, $1) -- $4\n, '$5', \"$6\", $q$ $7 $q$",
			args: [][]byte{[]byte("false"), []byte("off")}},
		{name: "one of two typed", sql: "select set_config('default_transaction_read_only', $1, $2)", args: [][]byte{[]byte("off"), []byte("false")}, types: []uint32{25}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			alias := ferrytest.ConnectPgConn(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
			res := alias.ExecParams(ctx, tc.sql, tc.args, tc.types, nil, nil).Read()
			if code, _, _ := pgCode(res.Err); code != "25006" {
				t.Fatalf("%s: %v; want SQLSTATE 25006", tc.sql, res.Err)
			}
		})
	}
}
