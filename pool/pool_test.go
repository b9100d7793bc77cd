package pool_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { c.Stop(); os.Exit(code) }))
}

func config(size int) pool.Config {
	return pool.Config{
		Database: "app", User: pgtest.AppUser, Size: size,
		LoginRetry: 100 * time.Millisecond,
		Dial: pool.DialConfig{
			Hosts: []string{cluster.Host}, Port: cluster.Port,
			Database: pgtest.AppDatabase, User: pgtest.AppUser,
			Password: pool.StaticPassword(pgtest.AppPassword),
			SSLMode:  pool.SSLDisable, ConnectTimeout: 5 * time.Second,
		},
	}
}

func newPool(t *testing.T, cfg pool.Config) *pool.Pool {
	p := pool.New(cfg)
	t.Cleanup(p.Close)
	return p
}

func acquire(t *testing.T, p *pool.Pool) *pool.ServerConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestPoolLendsAtMostSizeConnectionsAndServesWaitersInOrder(t *testing.T) {
	p := newPool(t, config(2))
	a, b := acquire(t, p), acquire(t, p)
	if st := p.Stat(); st.Active != 2 || st.Total != 2 {
		t.Fatalf("stat %+v, want 2 active", st)
	}
	got := make(chan int, 2)
	for i := 1; i <= 2; i++ {
		go func() {
			sc := acquire(t, p)
			got <- i
			time.Sleep(10 * time.Millisecond)
			p.Release(sc)
		}()
		// Make sure waiter i is queued before waiter i+1.
		deadline := time.Now().Add(5 * time.Second)
		for p.Stat().Waiting != i {
			if time.Now().After(deadline) {
				t.Fatal("waiter did not queue")
			}
			time.Sleep(time.Millisecond)
		}
	}
	p.Release(a)
	if first := <-got; first != 1 {
		t.Fatalf("waiter %d was served first, want 1 (FIFO)", first)
	}
	p.Release(b)
	<-got
	if st := p.Stat(); st.Total > 2 {
		t.Fatalf("pool grew to %d connections, size is 2", st.Total)
	}
}

func TestAWaiterGivesUpWhenItsContextEnds(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)
	defer p.Release(sc)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline error", err)
	}
	if st := p.Stat(); st.Waiting != 0 {
		t.Fatalf("%d waiters left behind", st.Waiting)
	}
}

// waitBackendGone waits until the backend pid has exited and its FIN has
// had time to reach pgferry's socket.
func waitBackendGone(t *testing.T, pid uint32) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, err := cluster.QueryInt(ctx, fmt.Sprintf("select count(*) from pg_stat_activity where pid = %d", pid))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d did not exit", pid)
		}
	}
	time.Sleep(20 * time.Millisecond)
}

func TestAConnectionThatDiedWhileIdleIsNeverHandedOut(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)
	pid := sc.PID
	p.Release(sc)
	ctx := context.Background()
	if err := cluster.Exec(ctx, fmt.Sprintf("select pg_terminate_backend(%d)", pid)); err != nil {
		t.Fatal(err)
	}
	waitBackendGone(t, pid)
	sc = acquire(t, p)
	defer p.Release(sc)
	if sc.PID == pid {
		t.Fatal("the pool handed out a connection whose server had exited")
	}
}

func TestALoopLendsAConnectionVouchedForSinceItAsksWithoutLookingAtItsSocketAndLooksAtAnyOther(t *testing.T) {
	p := newPool(t, config(1))
	ctx := context.Background()
	// deadWhileIdle lends a connection and gives it back vouched for at
	// stamp (0: with Release, which vouches for nothing); its server then
	// exits. It returns the server's pid.
	deadWhileIdle := func(stamp int64) uint32 {
		t.Helper()
		sc := acquire(t, p)
		if stamp == 0 {
			p.Release(sc)
		} else {
			sc.Vouched = stamp // its borrower's clock when the transaction ended
			p.ReleaseReady(sc)
		}
		if err := cluster.Exec(ctx, fmt.Sprintf("select pg_terminate_backend(%d)", sc.PID)); err != nil {
			t.Fatal(err)
		}
		waitBackendGone(t, sc.PID)
		return sc.PID
	}

	// Vouched for since 100: lent as it is, its socket not looked at (a
	// look would have found the server gone).
	pid := deadWhileIdle(100)
	looks := p.Stat().Looks
	sc := p.TryAcquireChecked(100)
	if sc == nil || sc.PID != pid {
		t.Fatalf("TryAcquireChecked(100) lent %v; want the connection vouched for at 100, unlooked at", sc)
	}
	if n := p.Stat().Looks - looks; n != 0 {
		t.Fatalf("the pool counted %d looks at a connection it lent unlooked at", n)
	}
	// Given back with Release, it is vouched for no more: looked at, found
	// dead, destroyed, and nothing is lent.
	p.Release(sc)
	if sc := p.TryAcquireChecked(100); sc != nil {
		t.Fatalf("TryAcquireChecked(100) lent backend %d after a Release, whose server had exited", sc.PID)
	}

	// Vouched for before what the loop asks for, or not at all, or asked
	// with no time: looked at, and the dead one destroyed.
	for _, tc := range []struct{ stamp, since int64 }{{100, 101}, {0, 100}, {100, 0}} {
		deadWhileIdle(tc.stamp)
		if sc := p.TryAcquireChecked(tc.since); sc != nil {
			t.Fatalf("vouched for at %d, TryAcquireChecked(%d) lent backend %d, whose server had exited", tc.stamp, tc.since, sc.PID)
		}
	}
	if st := p.Stat(); st.Destroyed != 4 || st.Looks-looks != 4 {
		t.Fatalf("%d connections destroyed after %d looks at their sockets; want the four dead ones, each looked at once", st.Destroyed, st.Looks-looks)
	}
}

func TestAConnectionReleasedAsOfATimeTheCallerReadAgesFromThatTime(t *testing.T) {
	cfg := config(1)
	cfg.Lifetime = time.Hour
	p := newPool(t, cfg)

	// Released as of a minute ago: idle since then, not since the call.
	sc := acquire(t, p)
	at := time.Now().Add(-time.Minute)
	p.ReleaseReadyAt(sc, at)
	if idle := p.IdleConns(); len(idle) != 1 || !idle[0].LastUsed.Equal(at) {
		t.Fatalf("idle connections %+v; want one last used at %v, the time passed", idle, at)
	}

	// Released as of two hours on: past server_lifetime then, so closed.
	sc = acquire(t, p)
	p.ReleaseReadyAt(sc, time.Now().Add(2*time.Hour))
	if idle, st := p.IdleConns(), p.Stat(); len(idle) != 0 || st.Destroyed != 1 {
		t.Fatalf("%d idle, %d destroyed; want the connection closed, its lifetime over as of the time passed", len(idle), st.Destroyed)
	}
}

func TestAConnectionThatDiedWhileLentIsNotHandedToAQueuedClient(t *testing.T) {
	// Release, unlike ReleaseReady, does not vouch for the connection: a
	// client queued for it is handed a live one even if it died while lent
	// (a session ending in the middle of its server's shutdown).
	p := newPool(t, config(1))
	sc := acquire(t, p)
	pid := sc.PID
	got := make(chan *pool.ServerConn, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w, err := p.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	for deadline := time.Now().Add(5 * time.Second); p.Stat().Waiting != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second borrower did not queue")
		}
	}
	ctx := context.Background()
	if err := cluster.Exec(ctx, fmt.Sprintf("select pg_terminate_backend(%d)", pid)); err != nil {
		t.Fatal(err)
	}
	waitBackendGone(t, pid)
	p.Release(sc)

	w := <-got
	if w == nil {
		t.Fatal("the queued borrower got no connection")
	}
	defer p.Release(w)
	if w.PID == pid {
		t.Fatal("the queued borrower was handed the connection whose server had exited")
	}
	if w.Wr == nil {
		w.Wr = protocol.NewWriter(w.Conn)
	}
	if _, err := protocol.Exec(w.Rd, w.Wr, "select 1", nil); err != nil {
		t.Fatalf("the connection the queued borrower got does not work: %v", err)
	}
}

func TestTheReservePoolOpensOnceAWaiterHasWaitedLongEnough(t *testing.T) {
	cfg := config(1)
	cfg.ReserveSize = 1
	cfg.ReserveTimeout = 100 * time.Millisecond
	p := newPool(t, cfg)
	a := acquire(t, p)
	defer p.Release(a)
	b := acquire(t, p) // served by the reserve connection
	defer p.Release(b)
	if st := p.Stat(); st.Total != 2 {
		t.Fatalf("total %d, want 2 with the reserve", st.Total)
	}
}

func TestASharedDatabaseLimitCapsConnectionsAcrossPools(t *testing.T) {
	limit := pool.NewLimit(1)
	c1, c2 := config(2), config(2)
	c1.DBLimit, c2.DBLimit = limit, limit
	p1, p2 := newPool(t, c1), newPool(t, c2)
	sc := acquire(t, p1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := p2.Acquire(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second pool got a connection over the limit: %v", err)
	}
	if st := limit.Stat(); st != (pool.LimitStat{Max: 1, InUse: 1}) {
		t.Errorf("limit stat with one connection open = %+v, want {Max:1 InUse:1}", st)
	}
	p1.Release(sc)
	// The idle connection of p1 is closed to make room for p2.
	sc2 := acquire(t, p2)
	p2.Release(sc2)
	if st := (*pool.Limit)(nil).Stat(); st != (pool.LimitStat{}) {
		t.Errorf("a nil (uncapped) limit reports %+v", st)
	}
}

func TestALoweredLimitClosesIdleAndReturnedConnectionsAndARaisedOneAdmitsWaiters(t *testing.T) {
	limit := pool.NewSettableLimit(3)
	cfg := config(3)
	cfg.DBLimit = limit
	p := newPool(t, cfg)
	a, b, c := acquire(t, p), acquire(t, p), acquire(t, p)
	p.Release(c)
	if st := limit.Stat(); st != (pool.LimitStat{Max: 3, InUse: 3}) {
		t.Fatalf("with two lent and one idle, the limit says %+v", st)
	}

	limit.SetMax(1)
	if st := p.Stat(); st.Idle != 0 || st.Total != 2 {
		t.Fatalf("after lowering the cap to 1: %d idle, %d open; want the idle one closed (0, 2)", st.Idle, st.Total)
	}
	p.Release(a)
	if st := p.Stat(); st.Idle != 0 || st.Total != 1 {
		t.Fatalf("a connection returned over the cap was kept: %d idle, %d open; want 0, 1", st.Idle, st.Total)
	}
	p.Release(b)
	if st := p.Stat(); st.Idle != 1 || st.Total != 1 {
		t.Fatalf("the connection within the cap was not kept: %d idle, %d open; want 1, 1", st.Idle, st.Total)
	}

	limit.SetMax(0)
	// The idle connection is closed in the background, and counts until
	// its backend has exited.
	for deadline := time.Now().Add(10 * time.Second); limit.Stat() != (pool.LimitStat{Max: 0, InUse: 0}); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a cap of 0 left %+v", limit.Stat())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := p.Acquire(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a pool under a cap of 0 lent a connection: %v", err)
	}

	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sc, err := p.Acquire(ctx)
		if err == nil {
			p.Release(sc)
		}
		got <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); p.Stat().Waiting != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the acquire never queued")
		}
	}
	limit.SetMax(2)
	if err := <-got; err != nil {
		t.Fatalf("a waiter was not admitted when the cap was raised: %v", err)
	}
}

func TestConnectionsReturnedTogetherOverALoweredCapCloseOnlyTheExcess(t *testing.T) {
	for round := 0; round < 5; round++ {
		limit := pool.NewSettableLimit(4)
		cfg := config(4)
		cfg.DBLimit = limit
		p := newPool(t, cfg)
		lent := []*pool.ServerConn{acquire(t, p), acquire(t, p), acquire(t, p), acquire(t, p)}
		limit.SetMax(2)
		var wg sync.WaitGroup
		for _, sc := range lent {
			wg.Add(1)
			go func() { defer wg.Done(); p.Release(sc) }()
		}
		wg.Wait()
		if st := p.Stat(); st.Idle != 2 || st.Total != 2 {
			t.Fatalf("round %d: four returned at once over a cap of 2 left %d idle of %d open; want 2 of 2", round, st.Idle, st.Total)
		}
	}
}

func TestLoginFailuresReachWaitersAndFailFastDuringServerLoginRetry(t *testing.T) {
	cfg := config(1)
	cfg.Dial.Password = pool.StaticPassword("wrong")
	cfg.LoginRetry = time.Minute
	p := newPool(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Acquire(ctx)
	var se *pool.ServerError
	if !errors.As(err, &se) || se.Code != "28P01" {
		t.Fatalf("got %v, want the server's 28P01", err)
	}
	_, err = p.Acquire(ctx)
	var lf *pool.LoginFailingError
	if !errors.As(err, &lf) {
		t.Fatalf("got %v, want a fast LoginFailingError", err)
	}
}

func TestMinPoolSizeKeepsConnectionsWarm(t *testing.T) {
	cfg := config(3)
	cfg.MinSize = 2
	p := newPool(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for p.Stat().Idle < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("stat %+v: min_pool_size not kept", p.Stat())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReconnectRetiresConnectionsWhenTheyComeBack(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)
	pid := sc.PID
	p.Reconnect()
	p.Release(sc)
	sc = acquire(t, p)
	defer p.Release(sc)
	if sc.PID == pid {
		t.Fatal("a connection from before Reconnect was lent again")
	}
}

func TestServerLifetimeRetiresOldConnections(t *testing.T) {
	cfg := config(1)
	cfg.Lifetime = time.Nanosecond
	p := newPool(t, cfg)
	sc := acquire(t, p)
	pid := sc.PID
	p.Release(sc)
	sc = acquire(t, p)
	defer p.Release(sc)
	if sc.PID == pid {
		t.Fatal("a connection past server_lifetime was lent again")
	}
}

func TestDialFollowsTheWritableHostInAList(t *testing.T) {
	cfg := config(1).Dial
	cfg.Hosts = []string{"127.0.0.1:1", fmt.Sprintf("%s:%d", cluster.Host, cluster.Port)}
	cfg.RequireWritable = true
	sc, err := pool.Dial(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Addr != fmt.Sprintf("%s:%d", cluster.Host, cluster.Port) {
		t.Fatalf("dialed %s", sc.Addr)
	}
	sc.Conn.Close()
}

// forwardLater listens on port after delay and forwards every connection to
// the test cluster, like a server that comes back after a restart. It
// stops at the end of the test.
func forwardLater(t *testing.T, port int, delay time.Duration) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-time.After(delay):
		case <-done:
			return
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(cluster.Host, strconv.Itoa(port)))
		if err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		go func() { <-done; ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() { defer wg.Done(); io.Copy(c, s); c.Close() }()
			go func() { <-done; c.Close(); s.Close() }()
		}
	}()
}

func TestWaitersAreServedOnceARefusingServerAcceptsAgain(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(1)
	cfg.Dial.Port = port
	cfg.HoldTimeout = 30 * time.Second
	cfg.LoginRetry = time.Minute // would fail every client for a minute if it applied
	p := newPool(t, cfg)
	forwardLater(t, port, 600*time.Millisecond)
	sc := acquire(t, p) // refused at first; served once the server is back
	p.Release(sc)
	if st := p.Stat(); st.Retries == 0 || st.DialFailures == 0 {
		t.Fatalf("served without a refused dial (retries %d, failures %d): the test proves nothing", st.Retries, st.DialFailures)
	}
	sc = acquire(t, p)
	p.Release(sc)
}

func TestAPoolWithoutAHoldFailsItsWaitersWhenTheServerRefuses(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(1)
	cfg.Dial.Port = port
	p := newPool(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.Acquire(ctx)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("got %v, want connection refused at once", err)
	}
	// The waiter can tell the dial's failure from its own wait's.
	if !errors.As(err, new(*pool.DialError)) {
		t.Fatalf("got %v (%T), want a pool.DialError", err, err)
	}
}

func TestTransientFailuresAreThoseWaitingMayCure(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&pool.ServerError{Code: "57P03", Message: "the database system is starting up"}, true},
		{&pool.ServerError{Code: "57P01"}, true},
		{&pool.ServerError{Code: "28P01"}, false},
		{&pool.ServerError{Code: "3D000"}, false},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{fmt.Errorf("login: %w", io.ErrUnexpectedEOF), true},
		{pool.ErrReadOnlyServer, true},
		{errors.New("server asked for a password but none is configured"), false},
	}
	for _, tc := range tests {
		if got := pool.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// rotatingPassword is a PasswordSource and PasswordRejecter that hands out
// a stale password until told it was refused.
type rotatingPassword struct {
	mu               sync.Mutex
	current, next    string
	rejected, served int
	fail             error // returned instead of next, if set
}

func (r *rotatingPassword) Password(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served++
	if r.current == "" && r.fail != nil {
		return "", r.fail
	}
	return r.current, nil
}

func (r *rotatingPassword) Rejected(pw string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if pw == r.current {
		r.rejected++
		r.current = r.next
	}
}

func TestDialRetriesOnceWithANewPasswordAfterTheServerRefusesOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name         string
		src          *rotatingPassword
		wantErr      func(error) bool
		wantRejected int
	}{
		{"stale then good", &rotatingPassword{current: "stale-secret", next: pgtest.AppPassword}, nil, 1},
		{"good at once", &rotatingPassword{current: pgtest.AppPassword}, nil, 0},
		{"stale then stale", &rotatingPassword{current: "stale-secret", next: "still-stale-secret"}, func(err error) bool {
			var se *pool.ServerError
			return errors.As(err, &se) && se.Code == "28P01"
		}, 1},
		{"stale then none", &rotatingPassword{current: "stale-secret", fail: errors.New("no token")}, func(err error) bool {
			var pe *pool.PasswordError
			return errors.As(err, &pe)
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(1).Dial
			cfg.Password = tc.src
			sc, err := pool.Dial(ctx, &cfg)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				sc.Conn.Close()
			} else {
				if err == nil {
					sc.Conn.Close()
					t.Fatal("Dial succeeded")
				}
				if !tc.wantErr(err) {
					t.Fatalf("unexpected error %T: %v", err, err)
				}
				if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), "stale-secret") {
					t.Fatal("the error holds the refused password")
				}
			}
			if tc.src.rejected != tc.wantRejected || tc.src.served > 2 {
				t.Fatalf("rejected %d, served %d; want %d rejections and at most 2 passwords", tc.src.rejected, tc.src.served, tc.wantRejected)
			}
		})
	}
}

// TestAnIdleConnectionWhoseServerStopsAnsweringIsCheckedAndReplaced stops
// an idle connection's backend with SIGSTOP: its socket stays open, so
// only server_check_query can tell it no longer answers.
func TestAnIdleConnectionWhoseServerStopsAnsweringIsCheckedAndReplaced(t *testing.T) {
	cfg := config(1)
	cfg.CheckDelay = pool.CheckAlways
	cfg.CheckQuery = "select 1"
	cfg.CheckTimeout = 500 * time.Millisecond
	p := newPool(t, cfg)
	sc := acquire(t, p)
	stopped := int(sc.PID)
	p.Release(sc)
	if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(stopped, syscall.SIGCONT)
		syscall.Kill(stopped, syscall.SIGTERM)
	})
	sc = acquire(t, p)
	defer p.Release(sc)
	if int(sc.PID) == stopped {
		t.Fatal("the connection to the stopped backend was lent")
	}
	if st := p.Stat(); st.Checks < 2 || st.Destroyed == 0 {
		t.Fatalf("checks %d, destroyed %d: the stopped connection was not checked and replaced", st.Checks, st.Destroyed)
	}
}

func TestALoopLoansReadsStayNotWaitingForTheNextLoopLoanAndWaitAgainForABorrowerThatWaits(t *testing.T) {
	p := newPool(t, config(1))
	p.Release(acquire(t, p)) // one idle connection

	loopLoan := func() *pool.ServerConn {
		t.Helper()
		sc := p.TryAcquireChecked(0)
		if sc == nil {
			t.Fatal("TryAcquireChecked lent nothing with a connection idle")
		}
		return sc
	}
	sc := loopLoan()
	if !sc.NoWait() {
		t.Fatal("NoWait failed on a plain connection")
	}
	p.Release(sc)

	sc = loopLoan()
	if _, _, err := sc.Rd.Peek(); err != protocol.ErrWouldBlock {
		t.Fatalf("the loop's next loan read %v; want ErrWouldBlock (reads left not waiting)", err)
	}
	p.Release(sc)

	for name, lend := range map[string]func() *pool.ServerConn{
		"Acquire":    func() *pool.ServerConn { return acquire(t, p) },
		"TryAcquire": func() *pool.ServerConn { return p.TryAcquire() },
	} {
		sc := lend()
		if sc == nil {
			t.Fatalf("%s lent nothing with a connection idle", name)
		}
		// Nothing comes: a read that waits ends at its deadline.
		sc.Conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := sc.Rd.Peek(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a read after %s: %v; want it to wait until its deadline", name, err)
		}
		sc.Conn.SetReadDeadline(time.Time{})
		if !sc.NoWait() { // as the loop would leave it again
			t.Fatal("NoWait failed on a plain connection")
		}
		p.Release(sc)
	}
}

// killBackend ends the server backend of sc, a connection the test holds,
// and waits until it has exited.
func killBackend(t *testing.T, sc *pool.ServerConn) {
	t.Helper()
	if err := cluster.Exec(context.Background(), fmt.Sprintf("select pg_terminate_backend(%d)", sc.PID)); err != nil {
		t.Fatal(err)
	}
	waitBackendGone(t, sc.PID)
}

// A waiter handed a connection whose server has exited keeps its place
// at the head of the queue: the next connection is its, not that of the
// waiter who queued after it. Its request is counted once.
func TestAWaiterHandedADeadConnectionKeepsItsPlaceAndIsCountedOnce(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1))
	held := acquire(t, p)
	before := p.Stat()
	served := make(chan string, 2)
	wait := func(name string) {
		sc := acquire(t, p)
		served <- name
		p.Release(sc)
	}
	go wait("first")
	waitFor(t, "the first waiter to queue", func() bool { return p.Stat().Waiting == 1 })
	go wait("second")
	waitFor(t, "the second waiter to queue", func() bool { return p.Stat().Waiting == 2 })
	killBackend(t, held)
	p.Release(held) // to the first waiter, dead
	if a, b := <-served, <-served; a != "first" || b != "second" {
		t.Fatalf("served %s, then %s; want the first waiter first", a, b)
	}
	st := p.Stat()
	if n := st.AcquireCount - before.AcquireCount; n != 2 {
		t.Fatalf("%d acquires counted for two waiters", n)
	}
	if n := st.WaitCount - before.WaitCount; n != 2 {
		t.Fatalf("%d waits counted for two waiters", n)
	}
}

// A borrower that TryAcquire finds only a dead idle connection for, and
// that waits with Acquire then, counts one request (Stat.AcquireCount).
func TestATryAcquireThatFindsOnlyADeadConnectionCountsNoRequestOfItsOwn(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1))
	sc := acquire(t, p)
	p.Release(sc)
	killBackend(t, sc) // (idle: the test only reads its PID)
	before := p.Stat().AcquireCount
	if got := p.TryAcquire(); got != nil {
		t.Fatal("TryAcquire lent a dead connection")
	}
	p.Release(acquire(t, p))
	if n := p.Stat().AcquireCount - before; n != 1 {
		t.Fatalf("%d acquires counted for one request", n)
	}
}
