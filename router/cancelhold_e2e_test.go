package router_test

// End-to-end tests of a cancel's hold on its server: a server a
// CancelRequest is still on its way to serves no other client (PgBouncer's
// sv_being_canceled), and a cancel holds only the server it was sent to.
// The network to PostgreSQL goes through a proxy whose gate keeps the
// connection that delivers the cancel waiting (startProxy's hold).

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// heldCancel is a test's pgferry behind a proxy, its two clients, and a
// direct superuser connection that takes advisory locks.
type heldCancel struct {
	t          *testing.T
	ctx        context.Context
	db         string
	proxy      *tcpProxy
	f          *ferrytest.Ferry
	a, b, ctrl *pgx.Conn
}

func startHeldCancel(t *testing.T, poolSize int) *heldCancel {
	t.Parallel()
	h := &heldCancel{t: t, ctx: testContext(t)}
	var cfg *configs.Config
	cfg, h.db = configWithOwnDatabase(t)
	h.proxy = startProxy(t, net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
	e := cfg.Databases["app"]
	e.Port = h.proxy.port()
	e.PoolSize = poolSize
	cfg.Databases["app"] = e
	h.f = ferrytest.Start(t, cfg)
	h.a = ferrytest.Connect(t, h.ctx, h.f.AppDSN())
	h.b = ferrytest.Connect(t, h.ctx, h.f.AppDSN())
	h.ctrl = ferrytest.Connect(t, h.ctx, cluster.SuperDSN(h.db)) // directly, to hold locks
	return h
}

// exec runs sql on c, failing the test on an error.
func (h *heldCancel) exec(c *pgx.Conn, sql string) {
	h.t.Helper()
	if _, err := c.Exec(h.ctx, sql); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// waitingOnLock reports whether query waits on a lock on the server.
func (h *heldCancel) waitingOnLock(query string) (bool, error) {
	n, err := queryInt(h.ctx, "select count(*) from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query = $2", h.db, query)
	return n == 1, err
}

// start runs sql on c in the background; its error comes on the channel.
func (h *heldCancel) start(c *pgx.Conn, sql string) <-chan error {
	done := make(chan error, 1)
	go func() { _, err := c.Exec(h.ctx, sql); done <- err }()
	return done
}

// cancelHeldAtTheGate makes a's query wait on advisory lock 5 (which ctrl
// holds), has a ask pgferry to cancel it and returns once pgferry's
// connection to deliver that cancel waits at the proxy's gate; a's query
// is still running. The cancel's result comes on the channel.
func (h *heldCancel) cancelHeldAtTheGate() (aQuery, cancelled <-chan error) {
	h.t.Helper()
	h.proxy.hold()
	h.exec(h.ctrl, "select pg_advisory_lock(5), pg_advisory_lock(6)")
	aQuery = h.start(h.a, "select pg_advisory_xact_lock(5)")
	ferrytest.Eventually(h.t, 10*time.Second, "a's query to wait on its lock", func() (bool, error) {
		return h.waitingOnLock("select pg_advisory_xact_lock(5)")
	})
	done := make(chan error, 1)
	go func() { done <- h.a.PgConn().CancelRequest(h.ctx) }()
	select {
	case <-h.proxy.pending:
	case <-h.ctx.Done():
		h.t.Fatal("pgferry did not connect to the server to deliver the cancel")
	}
	return aQuery, done
}

// bsQueryIsNotCancelledByAsCancel has b wait on lock 6, lets a's held
// cancel through, and fails the test if that cancel cancelled b's query.
// With a server handed to b while the cancel was on its way, b's query
// reaches it and waits on the lock before the gate opens; otherwise b
// waits for a server, and the poll gives up quietly after 2 s.
func (h *heldCancel) bsQueryIsNotCancelledByAsCancel(cancelled <-chan error) {
	h.t.Helper()
	bQuery := h.start(h.b, "select pg_advisory_xact_lock(6)")
	giveUp := time.After(2 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
poll:
	for {
		if ok, err := h.waitingOnLock("select pg_advisory_xact_lock(6)"); err != nil {
			h.t.Fatal(err)
		} else if ok {
			break
		}
		select {
		case <-giveUp:
			break poll
		case <-tick.C:
		}
	}
	h.proxy.open()
	if err := <-cancelled; err != nil {
		h.t.Fatalf("cancel request: %v", err)
	}
	h.exec(h.ctrl, "select pg_advisory_unlock(6)")
	if err := <-bQuery; err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "57014" {
			h.t.Fatalf("a's cancel request canceled b's query: %v", err)
		}
		h.t.Fatalf("b's query: %v", err)
	}
}

func TestLateCancelRequestNeverCancelsAnotherClientsQuery(t *testing.T) {
	h := startHeldCancel(t, 1)
	// The pool's only server connection goes through the proxy now; later
	// connections (the cancel's) wait at the gate.
	h.exec(h.a, "select 1")
	aQuery, cancelled := h.cancelHeldAtTheGate()
	// Before the cancel gets through, a's query finishes by itself.
	h.exec(h.ctrl, "select pg_advisory_unlock(5)")
	if err := <-aQuery; err != nil {
		t.Fatalf("a's query: %v", err)
	}
	// b, which never asked for a cancel, queries next. pgferry must not
	// give it the server a cancel is still on its way to (PgBouncer holds
	// such a server back until the cancel is done).
	h.bsQueryIsNotCancelledByAsCancel(cancelled)
}

func TestAServerACancelIsStillOnItsWayToDoesNotGoBackToThePoolWhenItsClientLeaves(t *testing.T) {
	h := startHeldCancel(t, 1)
	h.exec(h.a, "select 1")
	aQuery, cancelled := h.cancelHeldAtTheGate()
	h.exec(h.ctrl, "select pg_advisory_unlock(5)")
	if err := <-aQuery; err != nil {
		t.Fatalf("a's query: %v", err)
	}
	// a leaves while its cancel is still on its way: its server, idle, must
	// not serve b before the cancel has been delivered.
	if err := h.a.Close(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.bsQueryIsNotCancelledByAsCancel(cancelled)
}

func TestACancelStillOnItsWayToALostServerDoesNotHoldTheClientsNextServer(t *testing.T) {
	h := startHeldCancel(t, 2)
	// Two server connections in the pool, through the proxy.
	ta, err := h.a.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := h.b.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ta.Commit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := tb.Commit(h.ctx); err != nil {
		t.Fatal(err)
	}
	aQuery, cancelled := h.cancelHeldAtTheGate()
	// a's server goes away while the cancel is on its way to it: a is told
	// (08006) and keeps its session.
	// (Its own database's only: the other tests of this file run the same
	// query at the same time.)
	h.exec(h.ctrl, "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query = 'select pg_advisory_xact_lock(5)'")
	var pe *pgconn.PgError
	if err := <-aQuery; !errors.As(err, &pe) || pe.Code != "08006" {
		t.Fatalf("a's query on the lost server: %v; want an 08006 ERROR", err)
	}
	// a's next transaction runs on the other server, which then goes back
	// to the pool: the cancel was for the lost one.
	h.exec(h.a, "select 1")
	pc := ferrytest.ConnectPgConn(t, h.ctx, adminDSN(h.f))
	ferrytest.Eventually(t, 10*time.Second, "a's server back in the pool", func() (bool, error) {
		p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app")
		return p["sv_idle"] == "1" && p["sv_active"] == "0", nil
	})
	h.proxy.open()
	if err := <-cancelled; err != nil {
		t.Fatalf("cancel request: %v", err)
	}
}

// A client whose transaction ended while its cancel was on its way, and
// that then sends an Execute and a Flush without a Sync, keeps its server
// when the cancel's end lets the deferred release go: the server is inside
// the extended protocol's implicit transaction until that Sync, and given
// to b it would run b's query inside a's uncommitted insert.
func TestACancelsEndDoesNotReleaseAServerInsideAnImplicitTransaction(t *testing.T) {
	h := startHeldCancel(t, 1)
	h.exec(h.ctrl, "create table held_insert (x int); grant all on held_insert to app")
	h.exec(h.a, "select 1")
	aQuery, cancelled := h.cancelHeldAtTheGate()
	h.exec(h.ctrl, "select pg_advisory_unlock(5)")
	if err := <-aQuery; err != nil {
		t.Fatalf("a's query: %v", err)
	}
	p := h.a.PgConn().StartPipeline(h.ctx)
	p.SendQueryParams("insert into held_insert values (1)", nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := p.GetResults()
	rr, ok := res.(*pgconn.ResultReader)
	if err != nil || !ok {
		t.Fatalf("a's insert: %v (%T)", err, res)
	}
	if _, err := rr.Close(); err != nil {
		t.Fatalf("a's insert: %v", err)
	}
	h.proxy.open()
	if err := <-cancelled; err != nil {
		t.Fatalf("cancel request: %v", err)
	}
	// b must wait for a's Sync: given a's server now, it would see a's
	// insert before a committed it.
	bSaw := make(chan string, 1)
	go func() {
		var n string
		err := h.b.QueryRow(h.ctx, "select count(*)::text from held_insert").Scan(&n)
		if err != nil {
			n = err.Error()
		}
		bSaw <- n
	}()
	select {
	case n := <-bSaw:
		t.Fatalf("b ran before a's Sync and saw %s rows of held_insert: a's server went back to the pool inside a's implicit transaction", n)
	case <-time.After(2 * time.Second):
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	for {
		res, err := p.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.(*pgconn.PipelineSync); ok {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := <-bSaw; n != "1" {
		t.Fatalf("b saw %s rows of held_insert after a's Sync; want a's committed one", n)
	}
}
