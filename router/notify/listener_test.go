package notify_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/notify"
)

// subscriber is a notify.Subscriber that keeps what it is given.
type subscriber struct {
	notes chan note // buffered: Notify must not hold up the reader
	ended atomic.Int32
}

type note struct{ channel, payload string }

func newSubscriber() *subscriber { return &subscriber{notes: make(chan note, 64)} }

// Notify decodes the NotificationResponse (PostgreSQL docs, "Message
// Formats": Int32 pid, String channel, String payload).
func (s *subscriber) Notify(frame []byte) *pool.ServerConn {
	ch, rest, _ := protocol.CString(protocol.Body(frame)[4:])
	payload, _, _ := protocol.CString(rest)
	s.notes <- note{string(ch), string(payload)}
	return nil
}

func (s *subscriber) CancelRunning(context.Context, *pool.ServerConn) {}

func (s *subscriber) ListenEnded() { s.ended.Add(1) }

// next returns the subscriber's next notification, failing the test if
// none comes within d.
func (s *subscriber) next(t *testing.T, d time.Duration) note {
	t.Helper()
	select {
	case n := <-s.notes:
		return n
	case <-time.After(d):
		t.Fatalf("no notification within %v", d)
		return note{}
	}
}

// setup returns a Listener on a database of the test's own, closed in
// t.Cleanup, and a direct connection to that database to send from.
func setup(t *testing.T) (*notify.Listener, *pgx.Conn, string) {
	t.Helper()
	db := cluster.CreateDatabase(t, pgtest.AppUser)
	p := pool.New(pool.Config{Database: db, User: pgtest.AppUser, Dial: pool.DialConfig{
		Hosts:          []string{net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port))},
		Database:       db,
		User:           pgtest.AppUser,
		Password:       pool.StaticPassword(pgtest.AppPassword),
		SSLMode:        pool.SSLDisable,
		ConnectTimeout: 5 * time.Second,
	}})
	t.Cleanup(p.Close)
	l := notify.New(p, zap.NewNop())
	t.Cleanup(l.Close) // before the pool closes: cleanups run last first
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	sender, err := pgx.Connect(ctx, cluster.DSN(db, pgtest.AppUser, pgtest.AppPassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close(context.Background()) })
	return l, sender, db
}

// eventually polls cond until it holds, failing the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", d, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func notifyOn(t *testing.T, sender *pgx.Conn, channel, payload string) {
	t.Helper()
	if _, err := sender.Exec(context.Background(), "select pg_notify($1, $2)", channel, payload); err != nil {
		t.Fatal(err)
	}
}

func TestSubscribersReceiveEveryNotificationSentAfterSubscribeOnTheirChannelsOnly(t *testing.T) {
	l, sender, _ := setup(t)
	a, b := newSubscriber(), newSubscriber()
	weird := `Mixed "case" channel`
	for _, sub := range []struct {
		s       *subscriber
		channel string
	}{{a, "a"}, {b, "b"}, {b, weird}} {
		if err := l.Subscribe(sub.s, sub.channel); err != nil {
			t.Fatalf("subscribe to %q: %v", sub.channel, err)
		}
	}
	// Subscribe returned: the LISTEN is live, nothing sent now is lost.
	notifyOn(t, sender, "a", "for a")
	notifyOn(t, sender, "b", "for b")
	notifyOn(t, sender, weird, "quoted")
	if got := a.next(t, 10*time.Second); got != (note{"a", "for a"}) {
		t.Errorf("a got %+v", got)
	}
	for _, want := range []note{{"b", "for b"}, {weird, "quoted"}} {
		if got := b.next(t, 10*time.Second); got != want {
			t.Errorf("b got %+v, want %+v", got, want)
		}
	}

	// b leaves "b": what is sent there next does not reach it, and what
	// follows on its other channel still does, in order.
	l.Unsubscribe(b, "b")
	notifyOn(t, sender, "b", "after unsubscribe")
	notifyOn(t, sender, weird, "still here")
	if got := b.next(t, 10*time.Second); got != (note{weird, "still here"}) {
		t.Errorf("b got %+v after leaving \"b\"", got)
	}
	if len(a.notes) != 0 {
		t.Errorf("a got %+v from channels it is not on", <-a.notes)
	}
}

func TestAListenerWhoseConnectionIsLostListensAgainOnANewOne(t *testing.T) {
	l, sender, db := setup(t)
	s := newSubscriber()
	if err := l.Subscribe(s, "resub"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := cluster.QueryInt(ctx, `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query like 'LISTEN "resub"%'`, db)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d listener backends (%v), want 1", n, err)
	}
	// Notifications sent while it reconnects are lost (as for a session
	// whose connection breaks); keep sending until one arrives.
	eventually(t, 30*time.Second, "a notification after the connection was lost", func() (bool, error) {
		notifyOn(t, sender, "resub", "again")
		select {
		case got := <-s.notes:
			return got == note{"resub", "again"}, nil
		case <-time.After(200 * time.Millisecond):
			return false, nil
		}
	})
}

func TestClosingAListenerEndsEverySubscribersListenAndRefusesNewOnes(t *testing.T) {
	l, _, db := setup(t)
	a, b := newSubscriber(), newSubscriber()
	for _, s := range []*subscriber{a, b} {
		for _, ch := range []string{"one", "two"} {
			if err := l.Subscribe(s, ch); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.Close()
	l.Close() // again: nothing more
	for name, s := range map[string]*subscriber{"a": a, "b": b} {
		if n := s.ended.Load(); n != 1 {
			t.Errorf("%s was told %d times that its LISTEN ended, want once", name, n)
		}
	}
	if err := l.Subscribe(newSubscriber(), "three"); !errors.Is(err, notify.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(t, 10*time.Second, "the listener connection to end", func() (bool, error) {
		n, err := cluster.QueryInt(ctx, `select count(*) from pg_stat_activity where datname = $1 and query like 'LISTEN %'`, db)
		return n == 0, err
	})
}

func TestAListenerClosedBeforeUseDialsNothing(t *testing.T) {
	l, _, _ := setup(t)
	l.Close()
	if err := l.Subscribe(newSubscriber(), "never"); !errors.Is(err, notify.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func TestAListenerDialsWithoutHoldingUpItsOtherSubscribersAndCloseCancelsTheDial(t *testing.T) {
	// A server that takes the connection and never answers: the first
	// Subscribe's dial hangs until the Listener closes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			accepted <- struct{}{}
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	p := pool.New(pool.Config{Database: "app", User: pgtest.AppUser, Dial: pool.DialConfig{
		Hosts: []string{addr.IP.String()}, Port: addr.Port, Database: "app", User: pgtest.AppUser,
		Password: pool.StaticPassword(pgtest.AppPassword), SSLMode: pool.SSLDisable, ConnectTimeout: time.Minute,
	}})
	defer p.Close()
	l := notify.New(p, zap.NewNop())
	defer l.Close() // (again, if the test fails before its own Close)

	subscribed := make(chan error, 2)
	go func() { subscribed <- l.Subscribe(newSubscriber(), "hangs") }()
	select {
	case <-accepted: // the dial waits for the server's answer
	case err := <-subscribed:
		t.Fatalf("Subscribe returned %v from a server that never answers", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the first Subscribe did not dial")
	}
	// While it dials, the Listener's lock is free: an Unsubscribe returns.
	unsubscribed := make(chan struct{})
	go func() {
		l.Unsubscribe(newSubscriber(), "other")
		close(unsubscribed)
	}()
	select {
	case <-unsubscribed:
	case err := <-subscribed:
		t.Fatalf("Subscribe returned %v before the Unsubscribe; the server never answers", err)
	case <-time.After(10 * time.Second):
		t.Fatal("an Unsubscribe waited for another subscriber's dial")
	}
	// A second subscriber waits for that dial rather than dial again.
	go func() { subscribed <- l.Subscribe(newSubscriber(), "waits") }()
	select {
	case <-accepted:
		t.Fatal("a second Subscribe dialled while the first one's dial was under way")
	case err := <-subscribed:
		t.Fatalf("a Subscribe returned %v while the dial was under way", err)
	case <-time.After(200 * time.Millisecond): // (long enough to have dialled, if it would)
	}
	// Close cancels the dial: both Subscribes end with ErrClosed.
	l.Close()
	for i := 0; i < 2; i++ {
		select {
		case err := <-subscribed:
			if !errors.Is(err, notify.ErrClosed) {
				t.Fatalf("a Subscribe ended by Close returned %v; want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not end the Subscribes waiting on a server that never answers")
		}
	}
}

// fakeServer is a server for a Listener to dial. It counts the connections
// it accepts; those silent picks by number (the first is 1) it never
// answers (it reads what the dial sends until the client hangs up), and it
// relays every other one to the cluster, so that the server is, to the
// Listener, up.
type fakeServer struct {
	ln       net.Listener
	silent   func(n int32) bool
	accepted atomic.Int32

	wg    sync.WaitGroup // the accept loop and every connection's goroutines
	mu    sync.Mutex     // guards conns
	conns []net.Conn     // every connection, closed when the test ends
}

// newFakeServer starts a fakeServer, stopped in t.Cleanup once every
// cleanup registered after it (the pool's, the Listener's) has run.
func newFakeServer(t *testing.T, silent func(n int32) bool) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, silent: silent}
	f.wg.Go(f.accept)
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.track(c)
		if f.silent(f.accepted.Add(1)) {
			f.wg.Go(func() {
				io.Copy(io.Discard, c) // until the dial gives up and hangs up
				c.Close()
			})
			continue
		}
		server, err := net.Dial("tcp", net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
		if err != nil {
			c.Close()
			continue
		}
		f.track(server)
		f.wg.Go(func() {
			io.Copy(server, c)
			server.Close()
		})
		f.wg.Go(func() {
			io.Copy(c, server)
			c.Close()
		})
	}
}

func (f *fakeServer) track(c net.Conn) {
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
}

// listenerVia returns a Listener on database db whose pool dials f, giving
// up on a login after connectTimeout; it is closed in t.Cleanup.
func listenerVia(t *testing.T, f *fakeServer, db string, connectTimeout time.Duration) *notify.Listener {
	t.Helper()
	addr := f.ln.Addr().(*net.TCPAddr)
	p := pool.New(pool.Config{Database: db, User: pgtest.AppUser, Dial: pool.DialConfig{
		Hosts: []string{addr.IP.String()}, Port: addr.Port, Database: db, User: pgtest.AppUser,
		Password: pool.StaticPassword(pgtest.AppPassword), SSLMode: pool.SSLDisable, ConnectTimeout: connectTimeout,
	}})
	t.Cleanup(p.Close)
	l := notify.New(p, zap.NewNop())
	t.Cleanup(l.Close) // before the pool closes: cleanups run last first
	return l
}

// subscribeAtOnce has n subscribers call Subscribe on channel together and
// returns what each got.
func subscribeAtOnce(l *notify.Listener, n int, channel string) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			<-start
			errs[i] = l.Subscribe(newSubscriber(), channel)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// dialTimeout is how long the Listener's dial waits for a server that
// never answers, in the tests below. The subscribers that call Subscribe
// together must all be waiting on the first one's dial before it gives up:
// this leaves them two seconds to get there.
const dialTimeout = 2 * time.Second

// timedOut reports whether err wraps a timeout: the error of a dial that
// gave up on a server that never answers (context.DeadlineExceeded, or
// the socket's deadline if it fired first).
func timedOut(err error) bool {
	var timeout interface{ Timeout() bool }
	return errors.As(err, &timeout) && timeout.Timeout()
}

func TestSubscribersWaitingOnAFailedDialGetItsErrorWithoutDiallingAgain(t *testing.T) {
	f := newFakeServer(t, func(int32) bool { return true }) // never answers
	l := listenerVia(t, f, "app", dialTimeout)
	const n = 5
	errs := subscribeAtOnce(l, n, "unreachable")
	if got := f.accepted.Load(); got != 1 {
		t.Errorf("%d subscribers arriving together on a server that never answers dialled it %d times; want once", n, got)
	}
	for i, err := range errs {
		if !timedOut(err) {
			t.Errorf("subscriber %d got %v; want the failed dial's error (a timeout)", i, err)
		}
	}
}

func TestASubscribeAfterAFailedDialDialsAgainWhileThoseThatWaitedOnItGetItsError(t *testing.T) {
	db := cluster.CreateDatabase(t, pgtest.AppUser)
	f := newFakeServer(t, func(n int32) bool { return n == 1 }) // the first dial gets no answer, the next ones do
	l := listenerVia(t, f, db, dialTimeout)
	const n = 5
	errs := subscribeAtOnce(l, n, "back")
	for i, err := range errs {
		if !timedOut(err) {
			t.Errorf("subscriber %d got %v; want the failed dial's error (a timeout), even with the server back by then", i, err)
		}
	}
	if got := f.accepted.Load(); got != 1 {
		t.Fatalf("%d subscribers arriving together dialled %d times; want once", n, got)
	}

	// The server answers now: the next Subscribe dials again, and its
	// LISTEN is live.
	s := newSubscriber()
	if err := l.Subscribe(s, "back"); err != nil {
		t.Fatalf("Subscribe after the failed dial, with the server answering: %v", err)
	}
	if got := f.accepted.Load(); got != 2 {
		t.Errorf("the server was dialled %d times in all; want twice", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sender, err := pgx.Connect(ctx, cluster.DSN(db, pgtest.AppUser, pgtest.AppPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(context.Background())
	notifyOn(t, sender, "back", "hello")
	if got := s.next(t, 10*time.Second); got != (note{"back", "hello"}) {
		t.Errorf("got %+v", got)
	}
}

// loseListenerConnection terminates the backend of db's listener
// connection, the one that last listened on channel, as a restart or an
// administrator would: the Listener reconnects in the background.
func loseListenerConnection(t *testing.T, db, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := cluster.QueryInt(ctx, `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query like $2`, db, `LISTEN "`+channel+`"%`)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d listener backends (%v), want 1", n, err)
	}
}

// reconnectDialling waits until f has accepted want connections: the
// background reconnect's dial has reached it.
func reconnectDialling(t *testing.T, f *fakeServer, want int32) {
	t.Helper()
	eventually(t, 10*time.Second, "the background reconnect to dial", func() (bool, error) {
		return f.accepted.Load() == want, nil
	})
}

func TestASubscribeDuringTheBackgroundReconnectWaitsForItsDialAndCloseCancelsIt(t *testing.T) {
	db := cluster.CreateDatabase(t, pgtest.AppUser)
	// The first connection is answered; no reconnect ever is.
	f := newFakeServer(t, func(n int32) bool { return n > 1 })
	l := listenerVia(t, f, db, time.Minute)
	s := newSubscriber()
	if err := l.Subscribe(s, "first"); err != nil {
		t.Fatal(err)
	}
	loseListenerConnection(t, db, "first")
	reconnectDialling(t, f, 2)

	// A Subscribe now waits for the reconnect's dial rather than dial a
	// second connection alongside it.
	subscribed := make(chan error, 1)
	go func() { subscribed <- l.Subscribe(newSubscriber(), "second") }()
	select {
	case err := <-subscribed:
		t.Fatalf("a Subscribe returned %v while the reconnect's dial was under way", err)
	case <-time.After(200 * time.Millisecond): // (long enough to have dialled, if it would)
	}
	if got := f.accepted.Load(); got != 2 {
		t.Fatalf("the server was dialled %d times; want twice (a Subscribe dialled while the background reconnect's dial was under way)", got)
	}

	// Close cancels that dial: the Subscribe waiting on it ends with
	// ErrClosed, and Close returns, the reconnect over.
	closed := make(chan struct{})
	go func() {
		l.Close()
		close(closed)
	}()
	select {
	case err := <-subscribed:
		if !errors.Is(err, notify.ErrClosed) {
			t.Fatalf("a Subscribe ended by Close returned %v; want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a Subscribe waiting on the background reconnect")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not cancel the background reconnect's dial")
	}
	if n := s.ended.Load(); n != 1 {
		t.Errorf("the subscriber was told %d times that its LISTEN ended, want once", n)
	}
}

func TestASubscribeDuringABackgroundReconnectThatFailsGetsItsErrorAndTheListenerRetriesOnItsOwn(t *testing.T) {
	db := cluster.CreateDatabase(t, pgtest.AppUser)
	// The first reconnect gets no answer; the connections before and after
	// it are answered.
	f := newFakeServer(t, func(n int32) bool { return n == 2 })
	l := listenerVia(t, f, db, dialTimeout)
	s := newSubscriber()
	if err := l.Subscribe(s, "kept"); err != nil {
		t.Fatal(err)
	}
	loseListenerConnection(t, db, "kept")
	reconnectDialling(t, f, 2)

	// A Subscribe now shares the outcome of the reconnect's dial, even
	// though a dial of its own would be answered.
	if err := l.Subscribe(newSubscriber(), "later"); !timedOut(err) {
		t.Fatalf("a Subscribe during the background reconnect got %v; want the reconnect's failed dial's error (a timeout)", err)
	}

	// The reconnect retries on its own: "kept" is listened to again, on
	// one connection.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sender, err := pgx.Connect(ctx, cluster.DSN(db, pgtest.AppUser, pgtest.AppPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(context.Background())
	eventually(t, 30*time.Second, "a notification after the reconnect", func() (bool, error) {
		notifyOn(t, sender, "kept", "again")
		select {
		case got := <-s.notes:
			return got == note{"kept", "again"}, nil
		case <-time.After(200 * time.Millisecond):
			return false, nil
		}
	})
	if got := f.accepted.Load(); got != 3 {
		t.Errorf("the server was dialled %d times; want 3 (the first connection, the failed reconnect, its retry)", got)
	}
	eventually(t, 10*time.Second, "one listener connection", func() (bool, error) {
		n, err := cluster.QueryInt(ctx, `select count(*) from pg_stat_activity where datname = $1 and query like 'LISTEN %'`, db)
		return n == 1, err
	})

	// The channel the failed Subscribe asked for can be subscribed now.
	later := newSubscriber()
	if err := l.Subscribe(later, "later"); err != nil {
		t.Fatal(err)
	}
	notifyOn(t, sender, "later", "now")
	if got := later.next(t, 10*time.Second); got != (note{"later", "now"}) {
		t.Errorf("got %+v", got)
	}
}
