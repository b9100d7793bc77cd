package router_test

// End-to-end tests of a client that sends the start of its next group of
// extended-protocol messages (no Sync yet) behind a request the server
// answers at once (a Sync, a Flush, a simple Query), and then waits for
// those answers, as pgx's Pipeline and libpq's pipeline mode do: the
// answers come, as from PostgreSQL, and those of the unfinished group
// after its Sync. Each runs with the relay loop off and on, and is
// compared with PostgreSQL's answers to the same messages.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// partialStep is what a client sends in one write and the answers it
// then waits for: up to the syncs-th ReadyForQuery, or its first n
// answers when n is set (a Flush asks for no ReadyForQuery).
type partialStep struct {
	send  []pgproto3.FrontendMessage
	syncs int
	n     int
	want  string
}

// read waits for the answers step s waits for (see rawClient.until and
// next: the wait fails the test after 20 s).
func (s partialStep) read(c *rawClient) string {
	if s.n > 0 {
		return c.next(s.n)
	}
	return c.until(s.syncs)
}

// A client that sends, in one write, a group with its Sync (or a Flush, or
// a simple Query) and the start of its next group, and waits for the
// first one's answers, gets them, and the next group's after its Sync, as
// PostgreSQL answers them. Before, pgferry sent it all to the server but
// read the answers only after a message that asks for them came last, so
// the client waited for ever (20 s here).
func TestAClientWaitingForAnswersWithItsNextGroupStartedGetsThem(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	sel := func(v string) []pgproto3.FrontendMessage { return msgs(parse("", "select "+v), bind(""), execMsg()) }
	cat := func(parts ...[]pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
		var all []pgproto3.FrontendMessage
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	sync, flush := msgs(syncMsg()), msgs(flushMsg())
	tests := []struct {
		name string
		// setup runs first, a simple Query answered "C Z" (default: a
		// select).
		setup string
		steps []partialStep
	}{
		{"behind a Sync", "", []partialStep{
			{send: cat(sel("1"), sync, sel("2")), syncs: 1, want: "1 2 D:1 C Z"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
		}},
		{"behind a Flush", "", []partialStep{
			{send: cat(sel("1"), flush, sel("2")), n: 4, want: "1 2 D:1 C"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
		}},
		{"behind a simple Query", "", []partialStep{
			{send: cat(msgs(&pgproto3.Query{String: "select 1"}), sel("2")), syncs: 1, want: "T D:1 C Z"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
		}},
		{"behind a COPY TO STDOUT", "", []partialStep{
			{send: cat(msgs(&pgproto3.Query{String: "copy (select 1) to stdout"}), sel("2")), syncs: 1,
				want: "*pgproto3.CopyOutResponse *pgproto3.CopyData *pgproto3.CopyDone C Z"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
		}},
		{"behind two groups, with a Flush after the next", "", []partialStep{
			{send: cat(sel("1"), sync, sel("2"), sync, sel("3")), syncs: 2, want: "1 2 D:1 C Z 1 2 D:2 C Z"},
			{send: flush, n: 4, want: "1 2 D:3 C"},
			{send: cat(sel("4"), sync), syncs: 1, want: "1 2 D:4 C Z"},
		}},
		{"a Parse and a Describe of a statement behind a Sync", "", []partialStep{
			{send: cat(sel("1"), sync, msgs(parse("d", "select $1::int"), describeStmt("d"))), syncs: 1, want: "1 2 D:1 C Z"},
			{send: sync, syncs: 1, want: "1 t T Z"},
		}},
		{"a Close of a statement behind a Sync", "", []partialStep{
			{send: cat(msgs(parse("s", "select 1"), bind("s"), execMsg()), sync, msgs(closeStmt("s"))), syncs: 1, want: "1 2 D:1 C Z"},
			{send: sync, syncs: 1, want: "3 Z"},
		}},
		{"in a session pinned to its server (a temporary table)", "create temporary table pin_tmp (x int)", []partialStep{
			{send: cat(sel("1"), sync, sel("2")), syncs: 1, want: "1 2 D:1 C Z"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
			{send: msgs(&pgproto3.Query{String: "select count(*) from pin_tmp"}), syncs: 1, want: "T D:0 C Z"},
		}},
		{"behind a group that failed", "", []partialStep{
			{send: cat(msgs(parse("", "select 1/0"), bind(""), execMsg()), sync, sel("2")), syncs: 1, want: "1 E:22012 Z"},
			{send: sync, syncs: 1, want: "1 2 D:2 C Z"},
		}},
		{"whose next group fails", "", []partialStep{
			{send: cat(sel("1"), sync, msgs(parse("", "not sql"), bind(""), execMsg())), syncs: 1, want: "1 2 D:1 C Z"},
			{send: cat(sync, sel("3"), sync), syncs: 2, want: "E:42601 Z 1 2 D:3 C Z"},
		}},
		{"inside a transaction", "", []partialStep{
			{send: cat(msgs(&pgproto3.Query{String: "begin"}), sel("1"), sync, sel("2")), syncs: 2, want: "C Z 1 2 D:1 C Z"},
			{send: cat(sync, msgs(&pgproto3.Query{String: "commit"})), syncs: 2, want: "1 2 D:2 C Z C Z"},
		}},
	}
	t.Parallel()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				f := ferrytest.Start(t, cfg)
				c := newRawClient(t, f.AppDSN())
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				if tc.setup == "" {
					c.want("a first query", 1, "T D:1 C Z", &pgproto3.Query{String: "select 1"})
				} else {
					c.want("setup", 1, "C Z", &pgproto3.Query{String: tc.setup})
					direct.want("setup", 1, "C Z", &pgproto3.Query{String: tc.setup})
				}
				entries, handbacks := loopCounters(t, f)
				if loop && entries == 0 {
					t.Fatal("the client was not served by the relay loop")
				}
				for i, s := range tc.steps {
					c.send(s.send...)
					got := s.read(c)
					if got != s.want {
						t.Fatalf("step %d: pgferry answered %q, want %q", i+1, got, s.want)
					}
					direct.send(s.send...)
					if pg := s.read(direct); pg != got {
						t.Fatalf("step %d: pgferry answered %q, PostgreSQL %q", i+1, got, pg)
					}
				}
				if _, after := loopCounters(t, f); loop && after != handbacks {
					t.Fatalf("the relay loop handed the session back %d times", after-handbacks)
				}
			})
		})
	}
}

// pgx's Pipeline, which writes what it queued without a Flush message
// when asked to (Pipeline.Flush), gets the results of a group ended by a
// Sync (or a Flush request) while the next group waits for its own, as
// from PostgreSQL. Before, its GetResults waited for ever.
func TestPgxPipelineResultsComeWhileItsNextGroupWaitsForItsSync(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name string
		// between ends the first group: a Sync or a Flush request.
		between func(p *pgconn.Pipeline)
		// first is how many results the first group has.
		first int
		want  string
	}{
		{"a Sync", (*pgconn.Pipeline).SendPipelineSync, 2, "1 sync 2 sync"},
		{"a Flush request", (*pgconn.Pipeline).SendFlushRequest, 1, "1 2 sync"},
	}
	t.Parallel()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				f := ferrytest.Start(t, cfg)
				run := func(dsn string) string {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					pc := ferrytest.ConnectPgConn(t, ctx, dsn)
					p := pc.StartPipeline(ctx)
					p.SendQueryParams("select 1", nil, nil, nil, nil)
					tc.between(p)
					p.SendQueryParams("select 2", nil, nil, nil, nil)
					if err := p.Flush(); err != nil {
						t.Fatal(err)
					}
					var got []string
					// The first group's results: the second's are not
					// asked for yet.
					got = pipelineResults(t, p, got, tc.first)
					if err := p.Sync(); err != nil {
						t.Fatal(err)
					}
					got = pipelineResults(t, p, got, -1)
					if err := p.Close(); err != nil {
						t.Fatalf("close the pipeline: %v", err)
					}
					return strings.Join(got, " ")
				}
				got := run(f.AppDSN())
				if got != tc.want {
					t.Fatalf("pgferry: %q, want %q", got, tc.want)
				}
				if pg := run(cluster.DSN(db, ferrytest.User, ferrytest.Password)); pg != got {
					t.Fatalf("pgferry: %q, PostgreSQL: %q", got, pg)
				}
			})
		})
	}
}

// pipelineResults appends to got the next n results of p (all of them
// that were asked for when n is -1): a query's first value, or "sync".
func pipelineResults(t *testing.T, p *pgconn.Pipeline, got []string, n int) []string {
	t.Helper()
	for ; n != 0; n-- {
		r, err := p.GetResults()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch r := r.(type) {
		case nil:
			if n > 0 {
				t.Fatalf("after %v: no more results", got)
			}
			return got
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				t.Fatalf("after %v: %v", got, res.Err)
			}
			got = append(got, string(res.Rows[0][0]))
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		default:
			got = append(got, fmt.Sprintf("%T", r))
		}
	}
	return got
}
