package router_test

// End-to-end tests of how a client's SET is replayed on the next server
// connection it uses: the value must mean there what it meant where the
// client set it, whatever standard_conforming_strings is on either side.

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// moveToAnotherServer makes a's next query run on another server
// connection, one whose standard_conforming_strings is scs before pgferry
// replays a's parameters there: b takes the server a released last and
// holds it until the test ends, c sets scs on the other (the pool has
// two) and leaves it so. PostgreSQL reads the whole of a query before it
// runs any of it, so the replay, a query of SETs, is read as scs says,
// whatever its own SET of standard_conforming_strings.
func moveToAnotherServer(t *testing.T, ctx context.Context, a, b, c *pgx.Conn, scs string) {
	t.Helper()
	var aPID, bPID, cPID, aPIDLater uint32
	if err := a.QueryRow(ctx, "select pg_backend_pid()").Scan(&aPID); err != nil {
		t.Fatal(err)
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&bPID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SET standard_conforming_strings TO "+scs); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "select pg_backend_pid()").Scan(&cPID); err != nil {
		t.Fatal(err)
	}
	if err := a.QueryRow(ctx, "select pg_backend_pid()").Scan(&aPIDLater); err != nil {
		t.Fatal(err)
	}
	if bPID != aPID || cPID == aPID || aPIDLater != cPID {
		t.Fatalf("servers: a %d then %d, b %d, c %d; want b on a's first and a on c's", aPID, aPIDLater, bPID, cPID)
	}
}

func TestASetValueIsReplayedAsItWasSetWhateverStandardConformingStringsIs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	// statement_timeout is tracked, not reported, and replayed after
	// search_path.
	cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "statement_timeout")
	type step = func(context.Context, *pgx.Conn) error
	simple := func(sql string) step {
		return func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
			return err
		}
	}
	unnamed := func(sql string) step {
		return func(ctx context.Context, c *pgx.Conn) error {
			return c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
		}
	}
	named := func(sql string) step {
		return func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.PgConn().Prepare(ctx, "set_stmt", sql, nil); err != nil {
				return err
			}
			return c.PgConn().ExecPrepared(ctx, "set_stmt", nil, nil, nil).Read().Err
		}
	}
	tests := []struct {
		name   string
		param  string
		set    []step // in order, on one server
		target string // the other server's standard_conforming_strings
	}{
		{"Unicode escapes, simple protocol", "search_path",
			[]step{simple(`SET search_path TO U&'a\005fschema', U&'\+01F600'`)}, "off"},
		{"Unicode escapes, unnamed statement", "search_path",
			[]step{unnamed(`SET search_path TO U&'a\005fschema'`)}, "off"},
		{"Unicode escapes, named prepared statement", "search_path",
			[]step{named(`SET search_path TO U&'a!005fschema' UESCAPE '!'`)}, "off"},
		{"Unicode escapes continued on the next line", "search_path",
			[]step{simple("SET search_path TO U&'a\\005f'\n'schema''s'")}, "off"},
		{"a backslash, set with standard_conforming_strings on", "search_path",
			[]step{simple(`SET search_path TO 'x\y', e'p\\q'`)}, "off"},
		{"a backslash, set with standard_conforming_strings off", "search_path",
			[]step{simple("SET standard_conforming_strings TO off"), simple(`SET search_path TO 'x\\y', 'it\'s'`)}, "on"},
		{"a backslash in a reported parameter", "application_name",
			[]step{simple(`SET application_name TO 'x\y\'`)}, "off"},
		{"a value that ends in a comment", "statement_timeout",
			[]step{simple("SET search_path TO a_schema -- the comment"), simple("SET statement_timeout TO 1234")}, "on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := ferrytest.Start(t, cfg)
			a := ferrytest.Connect(t, ctx, f.AppDSN())
			b := ferrytest.Connect(t, ctx, f.AppDSN())
			c := ferrytest.Connect(t, ctx, f.AppDSN())
			for _, set := range tc.set {
				if err := set(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			const look = "select current_setting($1), current_setting('standard_conforming_strings')"
			var want, wantSCS string
			if err := a.QueryRow(ctx, look, tc.param).Scan(&want, &wantSCS); err != nil {
				t.Fatal(err)
			}
			moveToAnotherServer(t, ctx, a, b, c, tc.target)
			var got, gotSCS string
			if err := a.QueryRow(ctx, look, tc.param).Scan(&got, &gotSCS); err != nil {
				t.Fatal(err)
			}
			if got != want || gotSCS != wantSCS {
				t.Errorf("on another server the client sees %s %q and standard_conforming_strings %s; want %q and %s, as where it set them",
					tc.param, got, gotSCS, want, wantSCS)
			}
			if n := f.Server.Snapshot().PinnedTotal; n != 0 {
				t.Errorf("%d clients pinned; want the SET carried, not pinned", n)
			}
		})
	}
}

// A value whose spelling pgferry does not read (a UESCAPE clause other
// than a plain '<c>') cannot be replayed safely: the client is pinned and
// keeps its value.
func TestASetValueInUnicodeEscapesPgferryCannotReadPinsTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	b := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := a.Exec(ctx, `SET search_path TO U&'d!0061t' UESCAPE E'!'`, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	var aPID, bPID, aPIDLater uint32
	if err := a.QueryRow(ctx, "select pg_backend_pid()").Scan(&aPID); err != nil {
		t.Fatal(err)
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&bPID); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := a.QueryRow(ctx, "select current_setting('search_path'), pg_backend_pid()").Scan(&got, &aPIDLater); err != nil {
		t.Fatal(err)
	}
	if bPID == aPID || aPIDLater != aPID {
		t.Errorf("client not pinned: its server pid went %d -> %d while another client got %d", aPID, aPIDLater, bPID)
	}
	if got != "dat" {
		t.Errorf("search_path is %q; want dat", got)
	}
}

// With pinning off, such a SET is refused instead, in either protocol.
func TestASetValueInUnicodeEscapesPgferryCannotReadIsRefusedWhenPinningIsOff(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PinOnSessionState = false
	f := ferrytest.Start(t, cfg)
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	const set = `SET search_path TO U&'d!0061t' UESCAPE E'!'`
	_, err := c.Exec(ctx, set, pgx.QueryExecModeSimpleProtocol)
	expectPgError(t, err, "0A000")
	expectPgError(t, c.PgConn().ExecParams(ctx, set, nil, nil, nil, nil).Read().Err, "0A000")
	var got string
	if err := c.QueryRow(ctx, "show search_path").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != `"$user", public` {
		t.Errorf("search_path is %q after the refused SETs; want the default", got)
	}
}
