package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A statement pgferry refuses at its Parse (one that would pin the client
// with pin_on_session_state = false, or that names pgferry's reserved
// statements) is swapped for one that raises the refusal when it runs. Its
// parameters stay as the server was to count and type them, so the
// client's Bind with its arguments reaches the refusal: with no types sent
// (pgx's Prepare, ExecParams with nil types) the Bind got 08P01 (bind
// message supplies 1 parameters, but prepared statement requires 0), and
// with a type left to the server (OID 0: libpq's PQexecParams, psycopg)
// the Parse got 42P18 (could not determine data type of parameter $1).
func TestAStatementRefusedAtItsParseKeepsItsParametersSoTheClientGetsTheRefusal(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PinOnSessionState = false
	f := ferrytest.Start(t, cfg)
	pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for _, tc := range []struct {
		name, sql, code string
	}{
		{"a statement that would pin", "select pg_advisory_lock($1::bigint)", "0A000"},
		{"a statement naming pgferry's reserved statements", "execute pgferry_1($1)", "42501"},
	} {
		for _, types := range []struct {
			name string
			oids []uint32
		}{{"no types", nil}, {"a type left to the server", []uint32{0}}} {
			t.Run(tc.name+"/"+types.name, func(t *testing.T) {
				res := pc.ExecParams(ctx, tc.sql, [][]byte{[]byte("7")}, types.oids, nil, nil).Read()
				expectPgError(t, res.Err, tc.code)
			})
		}
	}
}
