package router_test

// End-to-end tests of SETs around an error: an error undoes the SETs of
// its own transaction, those before it and those the server skips after
// it, and nothing of the transactions after.

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/jackc/pgx/v5"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A ROLLBACK ends a failed transaction: a SET sent after it (here in the
// same run of the extended protocol, after the ROLLBACK's answer came,
// so that no change of the client waited when the ROLLBACK settled) runs
// in a transaction of its own, which the Sync commits.
func TestASetAfterTheRollbackOfAFailedTransactionIsKept(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.send(parse("", "BEGIN"), bind(""), execMsg(), parse("", "SELECT 1/0"), bind(""), execMsg(), syncMsg())
	if got := c.until(1); !strings.Contains(got, "E:22012") {
		t.Fatalf("got %q, want the transaction to fail with 22012", got)
	}
	c.send(parse("", "ROLLBACK"), bind(""), execMsg(), &pgproto3.Flush{})
	if got := c.next(3); got != "1 2 C" {
		t.Fatalf("the ROLLBACK: got %q", got)
	}
	c.want("the SET", 1, "1 2 C Z", parse("", "SET search_path TO multi_a"), bind(""), execMsg(), syncMsg())
	want := defaults
	want.searchPath = "multi_a"
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	for round := range 3 {
		if got := rawView(c); got != want {
			t.Fatalf("round %d: the client sees %+v after its SET; want %+v", round, got, want)
		}
		// Another client holds a server connection: the client's next
		// request may go to the other one.
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := rawView(c); got != want {
			t.Fatalf("round %d, another client in a transaction: the client sees %+v after its SET; want %+v", round, got, want)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// The SETs the server skips after an error, up to the Sync, never run.
func TestASetTheServerSkipsAfterAnErrorIsNotKept(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	c := newRawClient(t, f.AppDSN())
	c.send(parse("", "SELECT 1/0"), bind(""), execMsg(), parse("", "SET search_path TO multi_a"), bind(""), execMsg(), syncMsg())
	if got := c.until(1); !strings.Contains(got, "E:22012") {
		t.Fatalf("got %q, want the statement to fail with 22012", got)
	}
	for round := range 3 {
		if got := rawView(c); got != defaults {
			t.Fatalf("round %d: the client sees %+v; want the defaults %+v: the server skipped its SET", round, got, defaults)
		}
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := look(t, tx); got != defaults {
			t.Fatalf("round %d: another client sees %+v; want the defaults %+v", round, got, defaults)
		}
		if got := rawView(c); got != defaults {
			t.Fatalf("round %d, another client in a transaction: the client sees %+v; want the defaults %+v", round, got, defaults)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// An error in an earlier transaction that had no pending SET left
// tentativeAborted set (relayserver.go set it on every ErrorResponse; only
// settle's callers cleared it, and only when changes were pending), so the
// next tracked SET outside a transaction was settled as if it had failed.
// Now an error aborts the pending changes of its own transaction only
// (failParams): those that ran before it, none of a later transaction.
func TestATrackedSetAfterAnEarlierErrorIsKept(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := c.Exec(ctx, "SELECT 1/0", pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Fatal("SELECT 1/0 succeeded")
	}
	if _, err := c.Exec(ctx, "SET search_path TO multi_a", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	want := defaults
	want.searchPath = "multi_a"
	for round := range 3 {
		if got, _ := look(t, c); got != want {
			t.Fatalf("round %d: the client sees %+v after its SET; want %+v", round, got, want)
		}
	}
}

// processDescribe takes back the push of a Describe of the unnamed
// statement (or of a tracked named one) and pushes it again after the
// Parse it injects. It did so with ss.q.n--, which left ring.seq counting
// both pushes, so ring.answered(), which is seq - n, ran one ahead of what
// was really answered for every such Describe still in the ring; now
// ring.unpush takes the number back too. settle took a later request's
// SETs for answered: here the COMMIT's CommandComplete (answered()+1) kept
// the SET of the query behind it, which then fails and which PostgreSQL
// undoes.
func TestASetPipelinedBehindACommitIsNotKeptBeforeItRuns(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	cfg.RelayLoop, cfg.RelayLoopSet = false, true // every frame on the goroutine: no race with the loop's flush
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.send(
		&pgproto3.Query{String: "COMMIT"},
		&pgproto3.Query{String: "SET search_path TO multi_a; SELECT 1/0"},
		parse("", "SELECT 1"), &pgproto3.Describe{ObjectType: 'S', Name: ""}, syncMsg(),
	)
	if got := c.until(3); !strings.Contains(got, "E:22012") {
		t.Fatalf("got %q, want the second query to fail with 22012", got)
	}
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	for round := range 3 {
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		look(t, tx)
		if got := rawView(c); got != defaults {
			t.Errorf("round %d: the client sees %+v; want the defaults %+v: its SET failed and PostgreSQL undid it", round, got, defaults)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
