package router_test

// End-to-end tests of a replay the server refuses: a value a client set
// that PostgreSQL accepted then, and refuses now that what it names is
// gone. The request pgferry sent behind the replay must not run with what
// the server held (another client's parameters): it fails with the
// server's refusal, and the session goes on.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// refusedViewSQL shows what the tests set: search_path, tracked by
// default, and default_text_search_config, tracked here, whose value
// PostgreSQL checks against the catalog at SET time.
const refusedViewSQL = "select current_setting('search_path') || '|' || current_setting('default_text_search_config')"

// answer is what a client got for one request: its rows' first columns,
// its errors and the status of its ReadyForQuery.
type answer struct {
	rows   []string
	errors []*pgproto3.ErrorResponse
	status byte
}

// answerOf reads the answer to one request, up to its ReadyForQuery.
func (c *rawClient) answerOf() answer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var a answer
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			a.rows = append(a.rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			e := *m
			a.errors = append(a.errors, &e)
		case *pgproto3.ReadyForQuery:
			a.status = m.TxStatus
			return a
		}
	}
}

// refusedVia lists the ways a client sends one request: a simple query,
// and the extended protocol (the error belongs to its first message, the
// rest is skipped up to its Sync, as PostgreSQL skips it).
var refusedVia = []struct {
	name string
	msgs func(sql string) []pgproto3.FrontendMessage
}{
	{"simple query", func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}
	}},
	{"extended protocol", func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{parse("", sql), bind(""), &pgproto3.Describe{ObjectType: 'P'}, execMsg(), syncMsg()}
	}},
}

// refusedSetup is a pgferry whose pool has one server connection,
// tracking default_text_search_config, and a client a that set it to a
// configuration of the test's database and search_path to refused_a;
// then b set search_path to refused_b on the same server connection, and
// the configuration was dropped: pgferry's replay of a's values there
// fails. owner is connected to the database directly; def is its
// default_text_search_config.
type refusedSetup struct {
	f     *ferrytest.Ferry
	a     *rawClient
	b     *rawClient
	owner *pgconn.PgConn
	def   string
}

func newRefusedSetup(t *testing.T, loop bool) *refusedSetup {
	t.Helper()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.RelayLoop = loop
	cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "default_text_search_config")
	s := &refusedSetup{owner: ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))}
	rr := s.owner.ExecParams(ctx, "select current_setting('default_text_search_config')", nil, nil, nil, nil).Read()
	if rr.Err != nil {
		t.Fatal(rr.Err)
	}
	s.def = string(rr.Rows[0][0])
	if err := s.owner.Exec(ctx, "CREATE TEXT SEARCH CONFIGURATION refused_ts (COPY = english)").Close(); err != nil {
		t.Fatal(err)
	}
	s.f = ferrytest.Start(t, cfg)
	s.a = newRawClient(t, s.f.AppDSN())
	s.a.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET default_text_search_config = 'public.refused_ts'"}})
	s.a.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO refused_a"}})
	s.b = newRawClient(t, s.f.AppDSN())
	s.b.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO refused_b"}})
	if got, want := s.b.value(refusedViewSQL), "refused_b|"+s.def; got != want {
		t.Fatalf("b sees %q, want %q", got, want)
	}
	if err := s.owner.Exec(ctx, "DROP TEXT SEARCH CONFIGURATION refused_ts").Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

// refusal is PostgreSQL's own error for a SET of what a asked for, now.
func (s *refusedSetup) refusal(t *testing.T) *pgconn.PgError {
	t.Helper()
	err := s.owner.Exec(testContext(t), "SET default_text_search_config = 'public.refused_ts'").Close()
	pe, ok := err.(*pgconn.PgError)
	if !ok {
		t.Fatalf("PostgreSQL itself: %v, want an error", err)
	}
	return pe
}

// assertRefused checks that a got the server's refusal, naming the
// parameter, for its request, and nothing of the request's own answer.
func assertRefused(t *testing.T, got answer, pg *pgconn.PgError) {
	t.Helper()
	if len(got.rows) != 0 {
		t.Fatalf("the request ran (rows %q) on a server connection pgferry could not give the client's parameters", got.rows)
	}
	if len(got.errors) != 1 {
		t.Fatalf("got %d errors, want one", len(got.errors))
	}
	e := got.errors[0]
	if e.Code != pg.Code || e.Severity != "ERROR" {
		t.Errorf("got %s %s, want ERROR %s as PostgreSQL refuses the SET (%s)", e.Severity, e.Code, pg.Code, pg.Message)
	}
	if !strings.Contains(e.Message, `"default_text_search_config"`) || !strings.Contains(e.Message, "pgferry") {
		t.Errorf("message %q: want it to name the parameter and say pgferry could not restore it", e.Message)
	}
	if got.status != 'I' {
		t.Errorf("ReadyForQuery %q, want 'I': the request did not run", got.status)
	}
}

func TestARequestBehindAReplayTheServerRefusesFailsRatherThanRunWithAnotherClientsParameters(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		for _, via := range refusedVia {
			name := via.name + ", relay loop off"
			if loop {
				name = via.name + ", relay loop on"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s := newRefusedSetup(t, loop)
				pg := s.refusal(t)
				s.a.send(via.msgs(refusedViewSQL)...)
				assertRefused(t, s.a.answerOf(), pg)
				// The session goes on: the refused value is gone (the
				// client was told), its other values are its own.
				for round := range 3 {
					if got, want := s.a.value(refusedViewSQL), "refused_a|"+s.def; got != want {
						t.Fatalf("round %d: a sees %q, want %q", round, got, want)
					}
					if got, want := s.b.value(refusedViewSQL), "refused_b|"+s.def; got != want {
						t.Fatalf("round %d: b sees %q, want %q", round, got, want)
					}
				}
				assertNoPanic(t, s.f)
			})
		}
	}
}

// Requests sent before the refusal came back fail alike, each in its
// place, and a transaction's end in front of a statement does not let it
// run: PostgreSQL would run a ROLLBACK in the transaction the refusal
// aborted, and the statement after it with what the server held.
func TestEveryRequestSentBehindARefusedReplayFailsInItsPlace(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(map[bool]string{false: "relay loop off", true: "relay loop on"}[loop], func(t *testing.T) {
			t.Parallel()
			s := newRefusedSetup(t, loop)
			pg := s.refusal(t)
			s.a.send(&pgproto3.Query{String: "ROLLBACK; " + refusedViewSQL},
				parse("", refusedViewSQL), bind(""), execMsg(), syncMsg(),
				&pgproto3.Query{String: "COMMIT"},
				&pgproto3.Query{String: refusedViewSQL})
			for i := range 4 {
				got := s.a.answerOf()
				if len(got.rows) != 0 || len(got.errors) != 1 || got.errors[0].Code != pg.Code || got.status != 'I' {
					t.Fatalf("request %d: rows %q, %d errors, ReadyForQuery %q; want the refusal (%s) alone", i, got.rows, len(got.errors), got.status, pg.Code)
				}
			}
			if got, want := s.a.value(refusedViewSQL), "refused_a|"+s.def; got != want {
				t.Fatalf("then a sees %q, want %q", got, want)
			}
			if got, want := s.b.value(refusedViewSQL), "refused_b|"+s.def; got != want {
				t.Fatalf("b sees %q, want %q", got, want)
			}
		})
	}
}

// A COPY FROM STDIN whose Query went behind a guard, while the server had
// not answered the replay yet, consumes the Sync pgferry sent behind the
// Query (PostgreSQL ignores a Sync during COPY IN): its answer is not
// waited for.
func TestACopyFromStdinRightBehindAReplayCompletes(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(map[bool]string{false: "relay loop off", true: "relay loop on"}[loop], func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 1)
			cfg.RelayLoop = loop
			f := ferrytest.Start(t, cfg)
			a := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			b := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			if _, err := a.Exec(ctx, "CREATE TABLE copied (v text); SET search_path TO public, copy_a").ReadAll(); err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				// b leaves its own search_path on the server: a's COPY
				// is the first request of a loan with a replay.
				if _, err := b.Exec(ctx, "SET search_path TO copy_b").ReadAll(); err != nil {
					t.Fatal(err)
				}
				tag, err := a.CopyFrom(ctx, strings.NewReader("x\ny\n"), "COPY copied FROM STDIN")
				if err != nil || tag.RowsAffected() != 2 {
					t.Fatalf("round %d: COPY: %v, %v", round, tag, err)
				}
				rr := a.ExecParams(ctx, "select count(*)::text || '|' || current_setting('search_path') from copied", nil, nil, nil, nil).Read()
				if rr.Err != nil {
					t.Fatal(rr.Err)
				}
				if got, want := string(rr.Rows[0][0]), fmt.Sprintf("%d|public, copy_a", 2*(round+1)); got != want {
					t.Fatalf("round %d: got %q, want %q", round, got, want)
				}
			}
		})
	}
}

// A client whose refused request would have pinned it (a PREPARE) is not
// pinned: nothing of it ran. A client in session mode, whose startup value
// the server refuses by its first request, goes on too, on another server
// connection.
func TestAClientTiedToItsServerByTheRefusedRequestGoesOn(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	t.Run("pinned by the refused request", func(t *testing.T) {
		t.Parallel()
		s := newRefusedSetup(t, false)
		pg := s.refusal(t)
		s.a.send(&pgproto3.Query{String: "PREPARE refused_p AS " + refusedViewSQL})
		assertRefused(t, s.a.answerOf(), pg)
		s.a.send(&pgproto3.Query{String: "EXECUTE refused_p"})
		if got := s.a.answerOf(); len(got.errors) != 1 || got.errors[0].Code != "26000" {
			t.Fatalf("EXECUTE of the refused PREPARE: rows %q, errors %d; want 26000: it never ran", got.rows, len(got.errors))
		}
		for round := range 3 {
			if got, want := s.a.value(refusedViewSQL), "refused_a|"+s.def; got != want {
				t.Fatalf("round %d: a sees %q, want %q", round, got, want)
			}
			if got, want := s.b.value(refusedViewSQL), "refused_b|"+s.def; got != want {
				t.Fatalf("round %d: b sees %q, want %q", round, got, want)
			}
		}
	})
	t.Run("session mode", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		cfg, db := configWithOwnDatabase(t)
		e := cfg.Databases["app"]
		e.PoolMode = "session"
		e.PoolSize = 2
		cfg.Databases["app"] = e
		owner := ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
		if err := owner.Exec(ctx, "CREATE TEXT SEARCH CONFIGURATION refused_ts (COPY = english)").Close(); err != nil {
			t.Fatal(err)
		}
		f := ferrytest.Start(t, cfg)
		c := newRawClient(t, f.AppDSN()+" options='-c search_path=refused_a -c default_text_search_config=public.refused_ts'")
		if err := owner.Exec(ctx, "DROP TEXT SEARCH CONFIGURATION refused_ts").Close(); err != nil {
			t.Fatal(err)
		}
		rr := owner.ExecParams(ctx, "select current_setting('default_text_search_config')", nil, nil, nil, nil).Read()
		if rr.Err != nil {
			t.Fatal(rr.Err)
		}
		def := string(rr.Rows[0][0])
		c.send(&pgproto3.Query{String: refusedViewSQL})
		got := c.answerOf()
		if len(got.rows) != 0 || len(got.errors) != 1 || !strings.Contains(got.errors[0].Message, `"default_text_search_config"`) {
			t.Fatalf("rows %q, %d errors; want the refusal alone", got.rows, len(got.errors))
		}
		for round := range 3 {
			if got, want := c.value(refusedViewSQL), "refused_a|"+def; got != want {
				t.Fatalf("round %d: the client sees %q, want %q", round, got, want)
			}
		}
	})
}

// A startup value the server refuses on replay is no longer one the pool
// remembers as accepted: the next login with it tries it at login, and
// fails there as PostgreSQL fails it, rather than log in and fail its
// first request.
func TestAStartupValueRefusedOnReplayIsTriedAgainAtTheNextLogin(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	owner := ferrytest.ConnectPgConn(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	if err := owner.Exec(ctx, "CREATE TEXT SEARCH CONFIGURATION refused_ts (COPY = english)").Close(); err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, cfg)
	startup := withRuntimeParams(t, f.AppDSN(), "default_text_search_config", "public.refused_ts")
	c := ferrytest.ConnectConfig(t, ctx, startup)
	if err := owner.Exec(ctx, "DROP TEXT SEARCH CONFIGURATION refused_ts").Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Exec(ctx, "select 1")
	refused := expectPgError(t, err, "22023")
	if !strings.Contains(refused.Message, "pgferry") {
		t.Fatalf("the first request: %s, want pgferry's refusal", refused.Message)
	}
	_, direct := pgx.ConnectConfig(ctx, withRuntimeParams(t, cluster.DSN(db, ferrytest.User, ferrytest.Password), "default_text_search_config", "public.refused_ts"))
	want := expectPgError(t, direct, "22023")
	conn, err := pgx.ConnectConfig(ctx, startup)
	if err == nil {
		conn.Close(ctx)
		t.Fatal("a login with the startup value the server refused since logged in")
	}
	if got := expectPgError(t, err, "22023"); got.Severity != "FATAL" || got.Message != want.Message {
		t.Errorf("through pgferry: %s %s; directly: %s %s", got.Severity, got.Message, want.Severity, want.Message)
	}
}
