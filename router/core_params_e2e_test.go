package router_test

// End-to-end tests of session parameters through pgferry: each client's
// parameters follow it across server connections, never leak to another
// client, and stay as they were when a SET fails.

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestSessionParametersFollowEachClientAcrossServerConnections(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)

	a := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name=core-a")
	b := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name=core-b")
	type seen struct {
		searchPath, timeZone, appName string
		pid                           uint32
	}
	const query = "select current_setting('search_path'), current_setting('TimeZone'), current_setting('application_name'), pg_backend_pid()"
	look := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) seen {
		t.Helper()
		var s seen
		if err := q.QueryRow(ctx, query).Scan(&s.searchPath, &s.timeZone, &s.appName, &s.pid); err != nil {
			t.Fatal(err)
		}
		return s
	}
	defaults := look(b)
	if defaults.searchPath != `"$user", public` || defaults.appName != "core-b" {
		t.Fatalf("defaults: %+v", defaults)
	}
	for _, sql := range []string{
		"create schema a_schema",
		"set search_path to a_schema",
		"SET TimeZone TO 'America/New_York'",
	} {
		if _, err := a.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	wantA := seen{searchPath: "a_schema", timeZone: "America/New_York", appName: "core-a"}
	wantB := seen{searchPath: defaults.searchPath, timeZone: defaults.timeZone, appName: "core-b"}
	if wantB.timeZone == wantA.timeZone {
		t.Fatalf("the server default time zone is already %s", wantA.timeZone)
	}
	check := func(who string, got, want seen) {
		t.Helper()
		got.pid = 0
		if got != want {
			t.Fatalf("%s sees %+v, want %+v", who, got, want)
		}
	}

	// Interleave so that each client runs on both server connections: while
	// one holds a server in a transaction, the other must use the second.
	aPIDs := map[uint32]bool{}
	bPIDs := map[uint32]bool{}
	for range 10 {
		txA, err := a.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := look(txA)
		aPIDs[s.pid] = true
		check("a in its transaction", s, wantA)
		s = look(b)
		bPIDs[s.pid] = true
		check("b while a holds a server", s, wantB)
		if err := txA.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		txB, err := b.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s = look(txB)
		bPIDs[s.pid] = true
		check("b in its transaction", s, wantB)
		s = look(a)
		aPIDs[s.pid] = true
		check("a while b holds a server", s, wantA)
		if err := txB.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(aPIDs) < 2 || len(bPIDs) < 2 {
		t.Fatalf("clients did not move between server connections (a used %d, b used %d)", len(aPIDs), len(bPIDs))
	}

	// And concurrently, in short transactions.
	errc := make(chan error, 2)
	for _, c := range []struct {
		conn *pgx.Conn
		want seen
	}{{a, wantA}, {b, wantB}} {
		go func() {
			for range 100 {
				var s seen
				err := pgx.BeginFunc(ctx, c.conn, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, query).Scan(&s.searchPath, &s.timeZone, &s.appName, &s.pid)
				})
				if err != nil {
					errc <- err
					return
				}
				s.pid = 0
				if s != c.want {
					errc <- errors.New("got " + s.searchPath + " / " + s.timeZone + " / " + s.appName + ", want " + c.want.searchPath + " / " + c.want.timeZone + " / " + c.want.appName)
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func TestSearchPathSetByOneClientNeverLeaksToAnother(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	setup := ferrytest.Connect(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	if _, err := setup.Exec(ctx, "create schema a_schema"); err != nil {
		t.Fatal(err)
	}
	const def = `"$user", public`
	tests := []struct {
		name  string
		sql   []string // simple queries, one message each
		wantA string   // what the client that ran sql sees afterwards
	}{
		{"SET outside a transaction", []string{"set search_path to a_schema"}, "a_schema"},
		{"SET in a committed transaction", []string{"begin", "set search_path to a_schema", "commit"}, "a_schema"},
		{"SET in a rolled back transaction", []string{"begin", "set search_path to a_schema", "rollback"}, def},
		{"SET in a committed transaction, one query string", []string{"begin; set search_path to a_schema; commit"}, "a_schema"},
		{"SET in a rolled back transaction, one query string", []string{"begin; set search_path to a_schema; rollback"}, def},
		{"SET LOCAL", []string{"begin", "set local search_path to a_schema", "commit"}, def},
		{"SET after nested block comments", []string{"/* a /* b */ c */ set search_path to a_schema"}, "a_schema"},
		{"SET after an escape string", []string{`select e'\''; set search_path to a_schema; --'`}, "a_schema"},
		{"SET of a quoted name", []string{`set "search_path" to a_schema`}, "a_schema"},
		{"SET after a comment a carriage return ends", []string{"select 1 -- x\r; set search_path to a_schema"}, "a_schema"},
		{"SET after an identifier with dollar signs", []string{"select 1 as a$b$; set search_path to a_schema"}, "a_schema"},
		{"SET after an escape string continued on the next line", []string{"select E'a'\n'\\'' , '\\'; set search_path to a_schema; select 'z'"}, "a_schema"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := ferrytest.Start(t, cfg)
			a := ferrytest.Connect(t, ctx, f.AppDSN())
			b := ferrytest.Connect(t, ctx, f.AppDSN())
			for _, sql := range tc.sql {
				if _, err := a.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			// b takes the server a just used (the most recently released)
			// and holds it, so a moves to the other one.
			tx, err := b.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var gotB, gotA string
			if err := tx.QueryRow(ctx, "show search_path").Scan(&gotB); err != nil {
				t.Fatal(err)
			}
			if err := a.QueryRow(ctx, "show search_path").Scan(&gotA); err != nil {
				t.Fatal(err)
			}
			if gotB != def {
				t.Errorf("another client sees search_path %q, want the default %q: session state leaked", gotB, def)
			}
			if gotA != tc.wantA {
				t.Errorf("the client that ran %q sees search_path %q, want %q", strings.Join(tc.sql, "; "), gotA, tc.wantA)
			}
		})
	}
}

func TestAFailedSetLeavesTheClientsParameterAsItWas(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	// One server, so both clients take turns on it.
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	b := ferrytest.Connect(t, ctx, f.AppDSN())
	var def string
	if err := a.QueryRow(ctx, "show timezone").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if def == "America/New_York" {
		t.Fatalf("the server default time zone is already %s", def)
	}

	_, err := a.Exec(ctx, "set timezone to 'No/Such_Zone'")
	expectPgError(t, err, "22023")
	if _, err := b.Exec(ctx, "set timezone to 'America/New_York'"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var gotA, gotB string
		if err := a.QueryRow(ctx, "show timezone").Scan(&gotA); err != nil {
			t.Fatal(err)
		}
		if err := b.QueryRow(ctx, "show timezone").Scan(&gotB); err != nil {
			t.Fatal(err)
		}
		if gotA != def || gotB != "America/New_York" {
			t.Fatalf("a (whose SET failed) sees %q, want %q; b sees %q, want America/New_York", gotA, def, gotB)
		}
	}
}
