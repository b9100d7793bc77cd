package router_test

// End-to-end tests of a SET whose value reads differently with
// standard_conforming_strings on and off, sent right behind a change of
// that setting, before the server reported it: pgferry must record the
// value as the server read it, under the setting in effect at that
// statement.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestASetBehindAChangeOfStandardConformingStringsIsRecordedAsTheServerReadIt(t *testing.T) {
	t.Parallel()
	cfg, db, defaults := multiConfig(t, true)
	// 'multi\\a' is multi\a with standard_conforming_strings off and
	// multi\\a with it on.
	const set = `SET search_path TO 'multi\\a', public`
	cases := []struct {
		name  string
		setup string // sent alone first, its answer awaited
		stmts []string
	}{
		{name: "turned off", stmts: []string{"SET standard_conforming_strings = off", set}},
		{name: "turned on", setup: "SET standard_conforming_strings = off", stmts: []string{"SET standard_conforming_strings TO on", set}},
		{name: "reset", setup: "SET standard_conforming_strings = off", stmts: []string{"RESET standard_conforming_strings", set}},
		{name: "turned off inside a transaction that commits", stmts: []string{"BEGIN", "SET standard_conforming_strings = off", set, "COMMIT"}},
		{name: "turned off and the SET behind a savepoint", stmts: []string{"BEGIN", "SET standard_conforming_strings = off", "SAVEPOINT s", set, "RELEASE s", "COMMIT"}},
	}
	// The ways to send the statements without waiting for the server to
	// report the new setting.
	vias := []struct {
		name string
		send func(c *rawClient, stmts []string) int // the ReadyForQuery count owed
	}{
		{"one simple query", func(c *rawClient, stmts []string) int {
			c.send(&pgproto3.Query{String: strings.Join(stmts, "; ")})
			return 1
		}},
		{"simple queries sent together", func(c *rawClient, stmts []string) int {
			for _, s := range stmts {
				c.send(&pgproto3.Query{String: s})
			}
			return len(stmts)
		}},
		{"a pipeline of unnamed statements", func(c *rawClient, stmts []string) int {
			var msgs []pgproto3.FrontendMessage
			for _, s := range stmts {
				msgs = append(msgs, parse("", s), bind(""), execMsg())
			}
			c.send(append(msgs, syncMsg())...)
			return 1
		}},
		{"named statements, a Sync after each", func(c *rawClient, stmts []string) int {
			var msgs []pgproto3.FrontendMessage
			for i, s := range stmts {
				name := fmt.Sprintf("scs%d", i)
				msgs = append(msgs, parse(name, s), bind(name), execMsg(), syncMsg())
			}
			c.send(msgs...)
			return len(stmts)
		}},
	}
	for _, via := range vias {
		for _, tc := range cases {
			// Each subtest has a pgferry and connections of its own; they
			// share the database, in which none keeps a change.
			t.Run(via.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				run := func(c *rawClient) string {
					if tc.setup != "" {
						c.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: tc.setup}})
					}
					return c.until(via.send(c, tc.stmts))
				}
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				wantTranscript := run(direct)
				want := rawView(direct)
				if want.searchPath == defaults.searchPath {
					t.Fatalf("the test is wrong: PostgreSQL shows %+v", want)
				}

				f := ferrytest.Start(t, cfg)
				c := newRawClient(t, f.AppDSN())
				if got := run(c); got != wantTranscript {
					t.Fatalf("the client is answered %q; PostgreSQL answers %q", got, wantTranscript)
				}
				assertOnlyTheClientSees(t, f, c, want, defaults, ", as PostgreSQL read its SET")
				if pinned := f.Pool(t, "app").Counters.PinnedClients; pinned != 0 {
					t.Errorf("the client is pinned; want its state carried")
				}
			})
		}
	}
}

// A change of standard_conforming_strings that ran on a server connection
// lost before it reported the change says nothing of the next one: the
// client's next SET is read there under that server's setting, the one
// the client still has.
func TestASetAfterTheServerLostAChangeOfStandardConformingStringsIsRecordedAsTheNextServerReadIt(t *testing.T) {
	t.Parallel()
	cfg, db, defaults := multiConfig(t, true)
	ctx := testContext(t)
	const set = `SET search_path TO 'multi\\a', public`
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	direct.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: set}})
	want := rawView(direct)

	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	const sleep = "select pg_sleep(20) as scs_lost"
	c.send(&pgproto3.Query{String: "SET standard_conforming_strings = off; COMMIT; " + sleep})
	ferrytest.Eventually(t, 20*time.Second, "the client's query to sleep on the server, to kill it", func() (bool, error) {
		n, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where query like '%"+sleep+"' and state = 'active' and pid <> pg_backend_pid()")
		return n > 0, err
	})
	if got := c.until(1); !strings.Contains(got, "E:08006") {
		t.Fatalf("got %q, want the server's loss (08006)", got)
	}
	c.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: set}})
	assertOnlyTheClientSees(t, f, c, want, defaults, ", as PostgreSQL read its SET")
}
