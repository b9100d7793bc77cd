package router_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// Session state must be tracked by what a statement means, whichever
// protocol carries it: a simple Query (psql, psycopg, pgx without
// arguments), an unnamed Parse/Bind/Execute, or a named one (postgres.js
// prepares every statement under a name, SET and LISTEN included), alone
// or in a pipeline.

// stateVia lists the ways a client sends one argument-free statement, as
// message sequences ending in one Sync or Query.
var stateVia = []struct {
	name string
	send func(sql string) []pgproto3.FrontendMessage
}{
	{"simple query", func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}
	}},
	{"unnamed statement", func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{parse("", sql), bind(""), execMsg(), syncMsg()}
	}},
	{"named statement with describe", func(sql string) []pgproto3.FrontendMessage {
		// postgres.js style: every statement named. A name of its own each
		// time: PostgreSQL refuses a Parse of a name the client holds
		// (42P05), and postgres.js parses a name once.
		name := fmt.Sprintf("pjs%x_%d", len(sql), stateViaNames.Add(1))
		return []pgproto3.FrontendMessage{parse(name, sql), &pgproto3.Describe{ObjectType: 'S', Name: name}, bind(name), execMsg(), syncMsg()}
	}},
}

// stateViaNames numbers the statements of stateVia's named way.
var stateViaNames atomic.Int64

// run sends msgs and returns the transcript up to the next ReadyForQuery,
// failing on any error response.
func (c *rawClient) run(msgs []pgproto3.FrontendMessage) string {
	c.t.Helper()
	c.send(msgs...)
	got := c.until(1)
	if strings.Contains(got, "E:") {
		c.t.Fatalf("%s: %s", describeMsgs(msgs), got)
	}
	return got
}

// value runs a one-column query through the extended protocol, unnamed,
// and returns its value.
func (c *rawClient) value(sql string) string {
	c.t.Helper()
	got := c.run([]pgproto3.FrontendMessage{parse("", sql), bind(""), execMsg(), syncMsg()})
	for _, f := range strings.Fields(got) {
		if v, ok := strings.CutPrefix(f, "D:"); ok {
			return v
		}
	}
	c.t.Fatalf("%s: no row in %q", sql, got)
	return ""
}

func TestTrackedParametersSetThroughAnyProtocolFollowTheClientAndNeverReachAnother(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 3)
	cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "statement_timeout")
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	owner := ferrytest.Connect(t, ctx, cluster.SuperDSN("app"))
	if _, err := owner.Exec(ctx, `
		create schema if not exists st_mine; create table if not exists st_mine.t (v text);
		truncate st_mine.t; insert into st_mine.t values ('mine');
		create table if not exists public.st_t (v text); truncate public.st_t; insert into public.st_t values ('public')`); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `grant usage on schema st_mine to app; grant select on all tables in schema st_mine to app; grant select on public.st_t to app`); err != nil {
		t.Fatal(err)
	}
	stop := keepServersBusy(t, f.AppDSN())
	defer stop()
	other := newRawClient(t, f.AppDSN())

	for _, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			c := newRawClient(t, f.AppDSN())
			other.t = t
			c.run(via.send("SET search_path = st_mine, public"))
			c.run(via.send("SET statement_timeout = '1234ms'"))
			for i := 0; i < 15; i++ {
				if got := c.value("select v from t"); got != "mine" {
					t.Fatalf("read %d: the client's search_path was lost: read %q", i, got)
				}
				if got := c.value("show statement_timeout"); got != "1234ms" {
					t.Fatalf("read %d: the client's statement_timeout was lost: %q", i, got)
				}
				if got := other.value("show search_path"); strings.Contains(got, "st_mine") {
					t.Fatalf("read %d: another client's search_path reached this one: %q", i, got)
				}
				if got := other.value("show statement_timeout"); got != "0" {
					t.Fatalf("read %d: another client's statement_timeout reached this one: %q", i, got)
				}
				if got := other.value("select v from st_t"); got != "public" {
					t.Fatalf("read %d: got %q", i, got)
				}
			}
			c.run(via.send("RESET search_path"))
			c.run(via.send("RESET ALL"))
			for i := 0; i < 5; i++ {
				if got := c.value("show search_path"); strings.Contains(got, "st_mine") {
					t.Fatalf("after RESET the client still has search_path %q", got)
				}
				if got := c.value("show statement_timeout"); got != "0" {
					t.Fatalf("after RESET ALL the client still has statement_timeout %q", got)
				}
			}
		})
	}
}

func TestSetInAPipelineThatFailsIsUndoneLikePostgreSQLUndoesIt(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	stop := keepServersBusy(t, f.AppDSN())
	defer stop()
	c := newRawClient(t, f.AppDSN())
	// SET, then a failing statement, then one Sync: the implicit
	// transaction rolls back and the SET with it.
	c.send(parse("set1", "SET search_path = pipeline_nowhere"), bind("set1"), execMsg(),
		parse("", "select 1/0"), bind(""), execMsg(), syncMsg())
	if got := c.until(1); got != "1 2 C 1 E:22012 Z" { // 1/0 fails when planned, at Bind
		t.Fatalf("got %q", got)
	}
	for i := 0; i < 5; i++ {
		if got := c.value("show search_path"); strings.Contains(got, "pipeline_nowhere") {
			t.Fatalf("a rolled-back SET took effect: %q", got)
		}
	}
	// Both SETs in one successful pipeline take effect.
	c.send(parse("a", "SET search_path = pipe_a"), bind("a"), execMsg(),
		parse("b", "SET application_name = 'pipe_b'"), bind("b"), execMsg(), syncMsg())
	if got := c.until(1); got != "1 2 C 1 2 C Z" {
		t.Fatalf("got %q", got)
	}
	for i := 0; i < 5; i++ {
		if got := c.value("select current_setting('search_path') || ',' || current_setting('application_name')"); got != "pipe_a,pipe_b" {
			t.Fatalf("after a pipelined pair of SETs: %q", got)
		}
	}
}

// notifications reads until n NotificationResponses on channel arrived or
// the wait ends, and returns how many did.
func (c *rawClient) notifications(channel string, n int, wait time.Duration) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	got := 0
	for got < n {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			return got
		}
		if m, ok := msg.(*pgproto3.NotificationResponse); ok && m.Channel == channel {
			got++
		}
	}
	return got
}

func TestListenThroughAnyProtocolIsLiveWhenItCompletesAndUnlistenEndsIt(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	sender := ferrytest.Connect(t, ctx, cluster.DSN("app", ferrytest.User, ferrytest.Password))

	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			ch := fmt.Sprintf("state_ch%d", i)
			c := newRawClient(t, f.AppDSN())
			c.send(via.send("LISTEN " + ch)...)
			ended := false
			for !ended {
				msg, err := c.pc.ReceiveMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				switch m := msg.(type) {
				case *pgproto3.CommandComplete:
					if string(m.CommandTag) != "LISTEN" {
						t.Fatalf("LISTEN answered with tag %q", m.CommandTag)
					}
				case *pgproto3.ErrorResponse:
					t.Fatalf("LISTEN: %s %s", m.Code, m.Message)
				case *pgproto3.ReadyForQuery:
					ended = true
				}
			}
			// Sent the moment LISTEN returned: every one must arrive.
			const n = 50
			for k := 0; k < n; k++ {
				if _, err := sender.Exec(ctx, "select pg_notify($1, $2)", ch, fmt.Sprint(k)); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.notifications(ch, n, 10*time.Second); got != n {
				t.Fatalf("received %d of %d notifications sent right after LISTEN returned", got, n)
			}
			// The session still runs ordinary statements, and the pooled
			// server connections it uses never ran LISTEN themselves (one
			// that had would hand notifications to whichever client it
			// serves next).
			for k := 0; k < 4; k++ {
				if got := c.value("select count(*) from pg_listening_channels()"); got != "0" {
					t.Fatalf("a pooled server connection listens on %s channels", got)
				}
			}
			c.send(via.send("UNLISTEN " + ch)...)
			if got := c.until(1); strings.Contains(got, "E:") {
				t.Fatalf("UNLISTEN: %s", got)
			}
			if _, err := sender.Exec(ctx, "select pg_notify($1, 'late')", ch); err != nil {
				t.Fatal(err)
			}
			if got := c.notifications(ch, 1, 500*time.Millisecond); got != 0 {
				t.Fatalf("received %d notifications after UNLISTEN", got)
			}
		})
	}
}

// describeMsgs names messages for failure reports: types, and the SQL of
// Parse and Query.
func describeMsgs(msgs []pgproto3.FrontendMessage) string {
	var parts []string
	for _, m := range msgs {
		switch m := m.(type) {
		case *pgproto3.Parse:
			parts = append(parts, fmt.Sprintf("Parse(%q, %q)", m.Name, m.Query))
		case *pgproto3.Query:
			parts = append(parts, fmt.Sprintf("Query(%q)", m.String))
		default:
			parts = append(parts, strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3."))
		}
	}
	return strings.Join(parts, " ")
}
