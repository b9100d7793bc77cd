package router_test

// End-to-end tests of SETs around savepoints: ROLLBACK TO SAVEPOINT undoes
// the SETs made after its savepoint and keeps those before it, RELEASE
// keeps both, and the transaction's end settles what is left. pgferry's
// record must match what PostgreSQL holds, whichever protocol carries the
// statements and however they are grouped into requests.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// savepointCases are transactions with savepoints, as requests of one or
// more statements sent in turn. want says what the client sees afterwards
// ("": the default), checked against PostgreSQL itself too.
var savepointCases = []struct {
	name     string
	requests [][]string
	want     multiView
}{
	{name: "a SET before the savepoint outlives ROLLBACK TO it",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'", "ROLLBACK TO SAVEPOINT s", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "RELEASE keeps the SETs on both sides of the savepoint",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'", "RELEASE SAVEPOINT s", "COMMIT"}},
		want:     multiView{searchPath: "multi_a", statementTimeout: "1234ms"}},
	{name: "the transaction's ROLLBACK undoes the SETs of a released savepoint",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'", "RELEASE s", "ROLLBACK"}}},
	{name: "ROLLBACK TO the outer of two savepoints",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s1", "SET statement_timeout = '1234ms'", "SAVEPOINT s2", "SET search_path TO multi_b", "ROLLBACK TO s1", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "ROLLBACK TO the inner of two savepoints, then RELEASE the outer",
		requests: [][]string{{"BEGIN", "SAVEPOINT s1", "SET search_path TO multi_a", "SAVEPOINT s2", "SET statement_timeout = '1234ms'", "ROLLBACK TO s2", "RELEASE s1", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "ROLLBACK TO the outer savepoint after RELEASE of the inner",
		requests: [][]string{{"BEGIN", "SAVEPOINT s1", "SET search_path TO multi_a", "SAVEPOINT s2", "SET statement_timeout = '1234ms'", "RELEASE s2", "ROLLBACK TO s1", "SET statement_timeout = '2345ms'", "COMMIT"}},
		want:     multiView{statementTimeout: "2345ms"}},
	{name: "a savepoint made before every SET",
		requests: [][]string{{"BEGIN", "SAVEPOINT s", "SET search_path TO multi_a", "ROLLBACK TO s", "SET statement_timeout = '1234ms'", "COMMIT"}},
		want:     multiView{statementTimeout: "1234ms"}},
	{name: "a name used twice means the latest savepoint so named",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'", "SAVEPOINT s", "SET search_path TO multi_b", "ROLLBACK TO s", "RELEASE s", "ROLLBACK TO s", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "a quoted name is not its lower-case spelling",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", `SAVEPOINT "S"`, "SET statement_timeout = '1234ms'", "SAVEPOINT s", "SET search_path TO multi_b", `ROLLBACK TO "S"`, "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "a name over 63 bytes is its first 63, as PostgreSQL truncates it",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT " + longName + "1", "SET statement_timeout = '1234ms'", "SAVEPOINT s", "SET search_path TO multi_b", "ROLLBACK TO " + longName + "2", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "a quoted name over 63 bytes is cut before the character that crosses them",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", `SAVEPOINT "` + longName[:62] + `é"`, "SET statement_timeout = '1234ms'", `ROLLBACK TO "` + longName[:62] + `"`, "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "a RESET before the savepoint outlives ROLLBACK TO it",
		requests: [][]string{{"SET statement_timeout = '1234ms'"}, {"BEGIN", "RESET statement_timeout", "SAVEPOINT s", "SET search_path TO multi_a", "ROLLBACK TO s", "COMMIT"}}},
	{name: "SET LOCAL beside savepoints lasts its transaction",
		requests: [][]string{{"BEGIN", "SET LOCAL statement_timeout = '1234ms'", "SAVEPOINT s", "SET search_path TO multi_a", "RELEASE s", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "ROLLBACK TO rescues the SETs before its savepoint from a later error",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'"}, {"SELECT 1/0"}, {"ROLLBACK TO SAVEPOINT s", "COMMIT"}},
		want:     multiView{searchPath: "multi_a"}},
	{name: "ROLLBACK TO rescues the SETs of the request that failed",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s", "SET statement_timeout = '1234ms'", "SELECT 1/0"}, {"ROLLBACK TO s", "SET statement_timeout = '2345ms'", "COMMIT"}},
		want:     multiView{searchPath: "multi_a", statementTimeout: "2345ms"}},
	{name: "the COMMIT of a failed transaction undoes the SETs before its savepoint",
		requests: [][]string{{"BEGIN", "SET search_path TO multi_a", "SAVEPOINT s"}, {"SELECT 1/0"}, {"COMMIT"}}},
}

// longName is a savepoint name of 63 bytes, PostgreSQL's longest
// (NAMEDATALEN - 1): it truncates a longer one to its first 63 bytes, or
// fewer where a character of several bytes crosses the 63rd.
var longName = "sp_" + strings.Repeat("long", 15)

// savepointVia lists the ways a client sends a case's requests: each
// request as one simple query, or a pipeline of unnamed or named
// statements before one Sync; each statement alone; and named statements
// all prepared before the first request (so before the first SET).
var savepointVia = []struct {
	name string
	run  func(c *rawClient, requests [][]string) string
}{
	{"one simple query a request", func(c *rawClient, requests [][]string) string {
		var out []string
		for _, stmts := range requests {
			c.send(&pgproto3.Query{String: strings.Join(stmts, "; ")})
			out = append(out, c.until(1))
		}
		return strings.Join(out, " | ")
	}},
	{"one simple query a statement", func(c *rawClient, requests [][]string) string {
		var out []string
		for _, stmts := range requests {
			for _, s := range stmts {
				c.send(&pgproto3.Query{String: s})
				out = append(out, c.until(1))
			}
		}
		return strings.Join(out, " | ")
	}},
	{"a pipeline of unnamed statements a request", func(c *rawClient, requests [][]string) string {
		var out []string
		for _, stmts := range requests {
			var msgs []pgproto3.FrontendMessage
			for _, s := range stmts {
				msgs = append(msgs, parse("", s), bind(""), execMsg())
			}
			c.send(append(msgs, syncMsg())...)
			out = append(out, c.until(1))
		}
		return strings.Join(out, " | ")
	}},
	{"a pipeline of named statements a request", func(c *rawClient, requests [][]string) string {
		var out []string
		for r, stmts := range requests {
			var msgs []pgproto3.FrontendMessage
			for i, s := range stmts {
				name := fmt.Sprintf("sp%d_%d", r, i)
				msgs = append(msgs, parse(name, s), &pgproto3.Describe{ObjectType: 'S', Name: name}, bind(name), execMsg())
			}
			c.send(append(msgs, syncMsg())...)
			out = append(out, c.until(1))
		}
		return strings.Join(out, " | ")
	}},
	{"named statements prepared before the first request", func(c *rawClient, requests [][]string) string {
		var msgs []pgproto3.FrontendMessage
		for r, stmts := range requests {
			for i, s := range stmts {
				msgs = append(msgs, parse(fmt.Sprintf("sp%d_%d", r, i), s))
			}
		}
		c.send(append(msgs, syncMsg())...)
		out := []string{c.until(1)}
		for r, stmts := range requests {
			msgs = msgs[:0]
			for i := range stmts {
				msgs = append(msgs, bind(fmt.Sprintf("sp%d_%d", r, i)), execMsg())
			}
			c.send(append(msgs, syncMsg())...)
			out = append(out, c.until(1))
		}
		return strings.Join(out, " | ")
	}},
}

func TestSetsAroundSavepointsFollowTheClientAsPostgreSQLKeepsThem(t *testing.T) {
	t.Parallel()
	cfg, db, defaults := multiConfig(t, true)
	for _, via := range savepointVia {
		for _, tc := range savepointCases {
			// Each subtest has a pgferry and connections of its own; they
			// share the database, in which none keeps a change.
			t.Run(via.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				want := defaults
				if tc.want.searchPath != "" {
					want.searchPath = tc.want.searchPath
				}
				if tc.want.statementTimeout != "" {
					want.statementTimeout = tc.want.statementTimeout
				}
				// What PostgreSQL itself does with the requests.
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				wantTranscript := via.run(direct, tc.requests)
				if got := rawView(direct); got != want {
					t.Fatalf("the test is wrong: PostgreSQL shows %+v, the test wants %+v", got, want)
				}

				f := ferrytest.Start(t, cfg) // server connections of its own
				c := newRawClient(t, f.AppDSN())
				if got := via.run(c, tc.requests); got != wantTranscript {
					t.Fatalf("the client is answered %q; PostgreSQL answers %q", got, wantTranscript)
				}
				assertOnlyTheClientSees(t, f, c, want, defaults, ", as PostgreSQL keeps it")
				if pinned := f.Pool(t, "app").Counters.PinnedClients; pinned != 0 {
					t.Errorf("the client is pinned; want its state carried")
				}
			})
		}
	}
}
