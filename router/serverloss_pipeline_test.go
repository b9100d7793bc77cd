package router_test

// End-to-end tests of a pipeline whose server connection is lost after part
// of a group (the messages up to a Sync) went to it: the client hears of
// the loss once for that group, its messages up to the Sync are skipped as
// PostgreSQL skips them after an error, and the groups after that Sync run
// whole on another server connection. Each runs with the relay loop off
// and on.

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// cutPipeline is a raw client of a pgferry of its own (relay loop on or
// off) whose first group, a long query, runs on a server the test
// terminates once the first messages of the next group went to it.
type cutPipeline struct {
	*rawClient
	f  *ferrytest.Ferry
	db string
	// sent receives after each request pgferry sends to the server once
	// the test counts them (counting).
	sent     chan struct{}
	counting atomic.Bool
}

// startCutPipeline starts pgferry with the relay loop on or off and a raw
// client (application "cut"), and counts what it sends to its server from
// the time the client's first group runs.
func startCutPipeline(t *testing.T, loop bool) *cutPipeline {
	t.Helper()
	cfg, db := configWithOwnDatabase(t)
	cfg.RelayLoop, cfg.RelayLoopSet = loop, true
	f := ferrytest.Start(t, cfg)
	p := &cutPipeline{f: f, db: db, sent: make(chan struct{}, 64)}
	t.Cleanup(router.SetFaultFor(f.Server, func(app, where string) {
		if app == "cut" && where == "process" && p.counting.Load() {
			p.sent <- struct{}{}
		}
	}))
	p.rawClient = newRawClient(t, withApp(f, "cut"))
	return p
}

// cut sends the first group, a query that sleeps, then more, of which the
// first n messages reach the server before the test terminates the
// server's backend; it returns once pgferry sent them.
func (p *cutPipeline) cut(n int, more ...pgproto3.FrontendMessage) {
	p.t.Helper()
	ctx := testContext(p.t)
	p.send(parse("", "select pg_sleep(60)"), bind(""), execMsg(), syncMsg())
	waitForBackend(p.t, ctx, p.db, "query = 'select pg_sleep(60)' and state = 'active'")
	p.counting.Store(true)
	p.send(more...)
	for range n {
		<-p.sent
	}
	p.counting.Store(false)
	if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", p.db); err != nil {
		p.t.Fatal(err)
	}
}

// eachRelayLoopSetting runs test in parallel with the relay loop off and
// on.
func eachRelayLoopSetting(t *testing.T, test func(t *testing.T, loop bool)) {
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			t.Parallel()
			test(t, loop)
		})
	}
}

// A group part of which went to a server lost before its Sync (a Parse, a
// Bind, a Describe, a Close) gets the lost connection's error once (08006),
// right behind the error of the group before it, whose query the server
// was running; what the client sends after it up
// to its Sync is skipped, a simple Query too, and the Sync answered, as
// PostgreSQL answers the same messages behind a group's error (there, a
// Parse that fails); the next group runs whole on another server. A simple
// Query that went to the lost server gets the error of its own. Before,
// the rest of the group ran on the next server, where its Execute found no
// portal (34000), or the Close of a named statement was answered nothing.
func TestTheRestOfAGroupWhoseServerIsLostIsSkippedToItsSync(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name    string
		prepare []pgproto3.FrontendMessage // run first, whole
		cut     []pgproto3.FrontendMessage // sent to the server before it is lost
		rest    []pgproto3.FrontendMessage // sent after the client heard of the loss
		want    string                     // the answers to rest and the group after it
		likePG  bool                       // PostgreSQL answers rest so behind an error
	}{
		{"after its Parse", nil, msgs(parse("", "select 2")), msgs(bind(""), execMsg(), syncMsg()),
			"E:08006 Z 1 2 D:3 C Z", true},
		{"after its Bind", nil, msgs(parse("", "select 2"), bind("")), msgs(execMsg(), syncMsg()),
			"E:08006 Z 1 2 D:3 C Z", true},
		{"after a Describe of its portal", nil, msgs(parse("", "select 2"), bind(""), &pgproto3.Describe{ObjectType: 'P'}),
			msgs(execMsg(), syncMsg()), "E:08006 Z 1 2 D:3 C Z", true},
		{"after a Describe of its statement", nil, msgs(parse("", "select 2"), describeStmt("")),
			msgs(bind(""), execMsg(), syncMsg()), "E:08006 Z 1 2 D:3 C Z", true},
		{"after a Close of its portal", nil, msgs(parse("", "select 2"), bind(""), &pgproto3.Close{ObjectType: 'P'}),
			msgs(syncMsg()), "E:08006 Z 1 2 D:3 C Z", true},
		{"after a Close of a named statement", msgs(parse("k", "select 'k'"), syncMsg()), msgs(closeStmt("k")),
			msgs(syncMsg()), "E:08006 Z 1 2 D:3 C Z", true},
		{"with a simple Query sent behind it", nil, msgs(parse("", "select 2"), bind("")),
			msgs(&pgproto3.Query{String: "select 'skipped'"}, syncMsg()), "E:08006 Z 1 2 D:3 C Z", true},
		{"a simple Query", nil, msgs(&pgproto3.Query{String: "select 2"}), nil,
			"E:08006 Z 1 2 D:3 C Z", false},
	}
	next := msgs(parse("", "select 3"), bind(""), execMsg(), syncMsg())
	t.Parallel()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				p := startCutPipeline(t, loop)
				if tc.prepare != nil {
					p.send(tc.prepare...)
					if got := p.until(1); got != "1 Z" {
						t.Fatalf("prepare: %q", got)
					}
				}
				p.cut(len(tc.cut), tc.cut...)
				if got := p.until(1); got != "1 2 E:08006 Z" {
					t.Fatalf("the group whose server was lost: %q, want 1 2 E:08006 Z", got)
				}
				p.send(append(tc.rest, next...)...)
				got := p.until(2)
				if got != tc.want {
					t.Fatalf("the rest of the group cut by the loss, then the next: %q, want %q", got, tc.want)
				}
				if !tc.likePG {
					return
				}
				direct := newRawClient(t, cluster.DSN(p.db, ferrytest.User, ferrytest.Password))
				direct.send(append(append(msgs(parse("", "not sql")), tc.rest...), next...)...)
				if pg := direct.until(2); withoutCodes(pg) != withoutCodes(got) {
					t.Fatalf("pgferry answered %q, PostgreSQL %q behind an error", got, pg)
				}
			})
		})
	}
}

// msgs is its arguments as a slice.
func msgs(m ...pgproto3.FrontendMessage) []pgproto3.FrontendMessage { return m }

// withoutCodes is a transcript (see rawClient.until) with its errors'
// SQLSTATEs left out.
func withoutCodes(transcript string) string {
	words := strings.Fields(transcript)
	for i, w := range words {
		if strings.HasPrefix(w, "E:") {
			words[i] = "E"
		}
	}
	return strings.Join(words, " ")
}

// An Execute sent with a Flush but no Sync yet, whose server is lost while
// it runs, gets the lost connection's error (08006) and the session goes
// on: the client's messages up to its Sync are skipped, the Sync answered,
// and the next group runs on another server. On the relay loop, the loop
// serves all of it. Before, the session ended (FATAL 08006), as it does
// for a client idle inside a transaction.
func TestAnExecuteFlushedWithoutASyncWhoseServerIsLostGetsAnErrorAndTheSessionGoesOn(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		ctx := testContext(t)
		p := startCutPipeline(t, loop)
		p.send(parse("", "select 1"), bind(""), execMsg(), syncMsg())
		if got := p.until(1); got != "1 2 D:1 C Z" {
			t.Fatalf("the first group: %q", got)
		}
		entries, handbacks := loopCounters(t, p.f)
		if loop && entries == 0 {
			t.Fatal("the client's first group was not served by the relay loop")
		}
		p.send(parse("", "select pg_sleep(60)"), bind(""), execMsg(), flushMsg())
		waitForBackend(t, ctx, p.db, "query = 'select pg_sleep(60)' and state = 'active'")
		if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", p.db); err != nil {
			t.Fatal(err)
		}
		if got := p.next(3); got != "1 2 E:08006" {
			t.Fatalf("the flushed group whose server was lost: %q, want 1 2 E:08006", got)
		}
		p.send(bind(""), execMsg(), syncMsg(), parse("", "select 3"), bind(""), execMsg(), syncMsg())
		if got := p.until(2); got != "Z 1 2 D:3 C Z" {
			t.Fatalf("the rest of the group, then the next: %q, want Z 1 2 D:3 C Z", got)
		}
		if _, after := loopCounters(t, p.f); loop && after != handbacks {
			t.Fatalf("the relay loop handed the session back %d times", after-handbacks)
		}
	})
}

// A group the server failed already (an error before its Sync, which the
// client has), lost while the server skips the rest of it, gets no second
// error: its Sync is answered, as PostgreSQL answers it after the error.
func TestAGroupTheServerFailedBeforeItsServerIsLostGetsOneError(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		ctx := testContext(t)
		p := startCutPipeline(t, loop)
		p.send(append(failingStatement(), flushMsg())...)
		if got := p.next(3); got != "1 2 E:22012" {
			t.Fatalf("the failed group: %q", got)
		}
		before := p.f.Pool(t, "app").Stat.Destroyed
		p.send(parse("", "select 2"), bind(""), execMsg(), flushMsg()) // (skipped by the server)
		if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and usename = 'app'", p.db); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 20*time.Second, "the lost server destroyed", func() (bool, error) {
			return p.f.Pool(t, "app").Stat.Destroyed > before, nil
		})
		p.send(syncMsg(), parse("", "select 3"), bind(""), execMsg(), syncMsg())
		if got := p.until(2); got != "Z 1 2 D:3 C Z" {
			t.Fatalf("the failed group's Sync, then the next group: %q, want Z 1 2 D:3 C Z", got)
		}
	})
}
