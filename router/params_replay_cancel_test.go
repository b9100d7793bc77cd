package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client that cancels its request while pgferry's replay of its
// parameters runs (here it waits for a lock a catalog lookup takes) gets
// the cancel, as on PostgreSQL, and keeps its parameters: a cancel is no
// refusal of the value the replay was setting, which pgferry forgot (the
// server's default from then on) as if the server had refused it.
func TestACancelThatLandsOnTheReplayKeepsTheClientsParameters(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	const view = "select current_setting('default_tablespace')"
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %s", map[bool]string{false: "off", true: "on"}[loop]), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 1)
			cfg.RelayLoop = loop
			cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "default_tablespace")
			f := ferrytest.Start(t, cfg)
			a := newRawClient(t, f.AppDSN())
			a.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET default_tablespace = pg_default"}})
			b := newRawClient(t, f.AppDSN())
			b.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET default_tablespace = ''"}})
			// The replay's SET default_tablespace reads pg_tablespace
			// (get_tablespace_oid), which the superuser holds locked.
			super := ferrytest.Connect(t, ctx, cluster.SuperDSN(db))
			tx, err := super.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "LOCK TABLE pg_catalog.pg_tablespace IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			a.send(&pgproto3.Query{String: view})
			deadline := time.Now().Add(20 * time.Second)
			for {
				var n int
				err := tx.QueryRow(ctx, `select count(*) from pg_stat_activity where datname = $1 and usename = 'app' and wait_event_type = 'Lock'`, db).Scan(&n)
				if err != nil {
					t.Fatal(err)
				}
				if n == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the replay never waited for the lock")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := a.pc.CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			got := a.answerOf()
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if len(got.errors) != 1 || got.errors[0].Code != "57014" {
				t.Fatalf("the cancelled request: rows %q, %d errors; want 57014 alone", got.rows, len(got.errors))
			}
			for round := range 3 {
				if got := a.value(view); got != "pg_default" {
					t.Fatalf("round %d: after its cancel a sees default_tablespace %q, want its own pg_default", round, got)
				}
				if got := b.value(view); got != "" {
					t.Fatalf("round %d: b sees default_tablespace %q, want its own ''", round, got)
				}
			}
			assertNoPanic(t, f)
		})
	}
}
