package router_test

// End-to-end tests of the SETs and RESETs of one request: a simple query
// of several statements, or a pipeline of several Executes before one
// Sync. Each must count as if the client had sent it alone: a tracked
// parameter follows the client, an untracked one pins it, and none of them
// stays on a server connection another client gets next.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// multiView is what a client sees of the parameters these tests set:
// search_path and statement_timeout are tracked (statement_timeout through
// track_extra_parameters), work_mem is not.
type multiView struct{ searchPath, statementTimeout, workMem string }

const multiViewSQL = "select current_setting('search_path'), current_setting('statement_timeout'), current_setting('work_mem'), pg_backend_pid()"

// multiConfig returns the configuration of a database of the test's own
// whose pool has two server connections, tracking statement_timeout, with
// the server database's name and the parameters a client that set nothing
// sees.
func multiConfig(t *testing.T, pinOnState bool) (*configs.Config, string, multiView) {
	t.Helper()
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "statement_timeout")
	cfg.PinOnSessionState = pinOnState
	c := ferrytest.Connect(t, testContext(t), cluster.DSN(db, ferrytest.User, ferrytest.Password))
	v, _ := look(t, c)
	c.Close(context.Background())
	if v.workMem == "1MB" || v.statementTimeout != "0" {
		t.Fatalf("the server defaults are already what the tests set: %+v", v)
	}
	return cfg, db, v
}

// look returns what q sees, and the pid of the server it ran on.
func look(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (multiView, uint32) {
	t.Helper()
	var v multiView
	var pid uint32
	if err := q.QueryRow(testContext(t), multiViewSQL).Scan(&v.searchPath, &v.statementTimeout, &v.workMem, &pid); err != nil {
		t.Fatal(err)
	}
	return v, pid
}

// pinRule says whether a request must pin its client: for some, pinning
// is how pgferry keeps PostgreSQL's meaning, but either is right.
type pinRule uint8

const (
	pinNever pinRule = iota
	pinAlways
	pinMay
)

// multiStateCases are requests of several statements that change session
// state. want says what the client sees afterwards ("": the default),
// checked against PostgreSQL itself too.
var multiStateCases = []struct {
	name  string
	setup []string // sent one by one first
	stmts []string
	want  multiView
	pin   pinRule
	// fails: the request fails (SQLSTATE), which rolls back what it set
	// since the last COMMIT.
	fails string
}{
	{name: "an untracked SET before a tracked one",
		stmts: []string{"SET work_mem = '1MB'", "SET search_path TO multi_a"},
		want:  multiView{searchPath: "multi_a", workMem: "1MB"}, pin: pinAlways},
	{name: "a tracked SET before an untracked one",
		stmts: []string{"SET search_path TO multi_a", "SET work_mem = '1MB'"},
		want:  multiView{searchPath: "multi_a", workMem: "1MB"}, pin: pinAlways},
	{name: "two tracked SETs",
		stmts: []string{"SET search_path TO multi_a", "SET statement_timeout = '1234ms'"},
		want:  multiView{searchPath: "multi_a", statementTimeout: "1234ms"}},
	{name: "a SET then a RESET of another parameter",
		setup: []string{"SET statement_timeout = '1234ms'"},
		stmts: []string{"SET search_path TO multi_a", "RESET statement_timeout"},
		want:  multiView{searchPath: "multi_a"}},
	{name: "RESET ALL then a SET",
		setup: []string{"SET statement_timeout = '1234ms'"},
		stmts: []string{"RESET ALL", "SET search_path TO multi_a"},
		want:  multiView{searchPath: "multi_a"}},
	{name: "SETs then RESET ALL",
		stmts: []string{"SET search_path TO multi_a", "SET statement_timeout = '1234ms'", "RESET ALL"}},
	{name: "SETs inside an explicit transaction that commits",
		stmts: []string{"BEGIN", "SET search_path TO multi_a", "SET statement_timeout = '1234ms'", "COMMIT"},
		want:  multiView{searchPath: "multi_a", statementTimeout: "1234ms"}},
	{name: "SETs inside an explicit transaction that rolls back",
		stmts: []string{"BEGIN", "SET search_path TO multi_a", "SET statement_timeout = '1234ms'", "ROLLBACK"}},
	{name: "an untracked SET inside an explicit transaction",
		stmts: []string{"BEGIN", "SET search_path TO multi_a", "SET work_mem = '1MB'", "COMMIT"},
		want:  multiView{searchPath: "multi_a", workMem: "1MB"}, pin: pinAlways},
	{name: "SET LOCAL beside a SET",
		stmts: []string{"BEGIN", "SET LOCAL work_mem = '1MB'", "SET LOCAL statement_timeout = '1234ms'", "SET search_path TO multi_a", "COMMIT"},
		want:  multiView{searchPath: "multi_a"}},
	{name: "SETs before a statement that fails",
		stmts: []string{"SET search_path TO multi_a", "SET statement_timeout = '1234ms'", "SELECT 1/0"},
		fails: "22012"},
	{name: "a SET committed before a statement that fails",
		stmts: []string{"SET search_path TO multi_a", "COMMIT", "SET statement_timeout = '1234ms'", "SELECT 1/0"},
		want:  multiView{searchPath: "multi_a"}, fails: "22012", pin: pinMay},
	{name: "a SET after a rule of several actions, rolled back",
		stmts: []string{"BEGIN", "CREATE TABLE multi_t (a int)", "CREATE RULE multi_r AS ON INSERT TO multi_t DO ALSO (SELECT 1; SELECT 2)", "SET search_path TO multi_a", "ROLLBACK"},
		pin:   pinMay},
	{name: "a SET after a function body of several statements, rolled back",
		stmts: []string{"BEGIN", "CREATE FUNCTION multi_f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", "SET search_path TO multi_a", "ROLLBACK"},
		pin:   pinMay},
	{name: "a SET rolled back before another",
		stmts: []string{"BEGIN", "SET search_path TO multi_a", "ROLLBACK", "SET statement_timeout = '1234ms'"},
		want:  multiView{statementTimeout: "1234ms"}, pin: pinMay},
}

// multiVia lists the ways a client sends several statements at once.
var multiVia = []struct {
	name string
	send func(c *rawClient, stmts []string)
}{
	{"one simple query", func(c *rawClient, stmts []string) {
		c.send(&pgproto3.Query{String: strings.Join(stmts, "; ")})
	}},
	{"a pipeline of unnamed statements", func(c *rawClient, stmts []string) {
		var msgs []pgproto3.FrontendMessage
		for _, s := range stmts {
			msgs = append(msgs, parse("", s), bind(""), execMsg())
		}
		c.send(append(msgs, syncMsg())...)
	}},
	{"a pipeline of named statements", func(c *rawClient, stmts []string) {
		var msgs []pgproto3.FrontendMessage
		for i, s := range stmts {
			name := fmt.Sprintf("multi%d", i) // postgres.js style
			msgs = append(msgs, parse(name, s), &pgproto3.Describe{ObjectType: 'S', Name: name}, bind(name), execMsg())
		}
		c.send(append(msgs, syncMsg())...)
	}},
}

// sendMulti sends a case's setup and then its request through via, and
// checks that the request failed as the case says.
func sendMulti(t *testing.T, c *rawClient, setup, stmts []string, fails string, send func(*rawClient, []string)) {
	t.Helper()
	for _, s := range setup {
		c.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: s}})
	}
	send(c, stmts)
	got := c.until(1)
	if fails != "" && !strings.Contains(got, "E:"+fails) {
		t.Fatalf("%s: got %q, want error %s", strings.Join(stmts, "; "), got, fails)
	}
	if fails == "" && strings.Contains(got, "E:") {
		t.Fatalf("%s: %s", strings.Join(stmts, "; "), got)
	}
}

// rawView is what c sees, read through the extended protocol.
func rawView(c *rawClient) multiView {
	v := strings.SplitN(c.row(multiViewSQL), "|", 4)
	return multiView{v[0], v[1], v[2]}
}

func TestEverySetOfARequestOfSeveralStatementsCountsAsIfSentAlone(t *testing.T) {
	t.Parallel()
	cfg, db, defaults := multiConfig(t, true)
	for _, via := range multiVia {
		for _, tc := range multiStateCases {
			// Each subtest has a pgferry and connections of its own; they
			// share the database, in which none keeps a change.
			t.Run(via.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				want := defaults
				for _, p := range []struct {
					dst *string
					v   string
				}{
					{&want.searchPath, tc.want.searchPath}, {&want.statementTimeout, tc.want.statementTimeout}, {&want.workMem, tc.want.workMem},
				} {
					if p.v != "" {
						*p.dst = p.v
					}
				}
				// What PostgreSQL itself does with the request.
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				sendMulti(t, direct, tc.setup, tc.stmts, tc.fails, via.send)
				if got := rawView(direct); got != want {
					t.Fatalf("the test is wrong: PostgreSQL shows %+v, the test wants %+v", got, want)
				}

				f := ferrytest.Start(t, cfg) // server connections of its own
				c := newRawClient(t, f.AppDSN())
				sendMulti(t, c, tc.setup, tc.stmts, tc.fails, via.send)
				assertOnlyTheClientSees(t, f, c, want, defaults, "")
				pinned := f.Pool(t, "app").Counters.PinnedClients
				if tc.pin == pinAlways && pinned != 1 {
					t.Errorf("the client is not pinned; want it pinned to its server connection")
				}
				if tc.pin == pinNever && pinned != 0 {
					t.Errorf("the client is pinned; want its state carried")
				}
			})
		}
	}
}

// assertOnlyTheClientSees checks, three rounds over, that another client of
// f, in a transaction on the server connection c used last (unless c is
// pinned to it), sees the defaults and nothing of c's state, while c,
// meanwhile on the other server connection unless pinned, sees want; why
// ends the message of a c that does not.
func assertOnlyTheClientSees(t *testing.T, f *ferrytest.Ferry, c *rawClient, want, defaults multiView, why string) {
	t.Helper()
	ctx := testContext(t)
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	for round := range 3 {
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen, _ := look(t, tx); seen != defaults {
			t.Errorf("round %d: another client sees %+v; want the defaults %+v", round, seen, defaults)
		}
		if got := rawView(c); got != want {
			t.Errorf("round %d: the client sees %+v; want %+v%s", round, got, want, why)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// row runs a query through the extended protocol, unnamed, and returns its
// one row's columns joined by "|".
func (c *rawClient) row(sql string) string {
	c.t.Helper()
	c.send(parse("", sql), bind(""), execMsg(), syncMsg())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var row []string
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("%s: %v", sql, err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			for _, v := range m.Values {
				row = append(row, string(v))
			}
		case *pgproto3.ErrorResponse:
			c.t.Fatalf("%s: %s %s", sql, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return strings.Join(row, "|")
		}
	}
}

func TestAQueryOfSeveralStatementsWithAnUntrackedSetIsRefusedWhenPinningIsOff(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, false)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	for _, sql := range []string{
		"SET work_mem = '1MB'; SET search_path TO multi_a",
		"SET search_path TO multi_a; SET statement_timeout = '1234ms'; SET work_mem = '1MB'",
	} {
		_, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if pe := expectPgError(t, err, "0A000"); pe.Severity != "ERROR" {
			t.Fatalf("%s: severity %s, want ERROR: the session goes on", sql, pe.Severity)
		}
		for range 3 {
			if seen, _ := look(t, c); seen != defaults {
				t.Fatalf("after the refused %q the client sees %+v; want the defaults %+v", sql, seen, defaults)
			}
		}
	}
}

// pgferry restores a client's parameters on a server connection with a
// query of its own before the client's; the client's SET that follows
// counts only once it has run.
func TestASetThatFailsAfterPgferryRestoredTheClientsParametersIsNotKept(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	c.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO multi_a"}})
	want := defaults
	want.searchPath = "multi_a"
	for round := range 3 {
		// The other client holds the server connection c used last: c's
		// next query goes to the other one, whose search_path pgferry
		// sets first.
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		look(t, tx)
		c.send(&pgproto3.Query{String: "SET statement_timeout = 'not a duration'"})
		if got := c.until(1); !strings.Contains(got, "E:22023") {
			t.Fatalf("round %d: got %q, want the SET refused with 22023", round, got)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if got := rawView(c); got != want {
				t.Fatalf("round %d: the client sees %+v; want %+v", round, got, want)
			}
		}
	}
}
