package notify_test

import (
	"context"
	"errors"
	"net"
	"strconv"
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
