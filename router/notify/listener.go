package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// A Subscriber is a client session listening through a Listener. The
// Listener calls its methods from its own goroutines (the reader, Close),
// never with its lock held; a Subscriber is a map key, so it must be
// comparable (a pointer).
type Subscriber interface {
	// Notify queues a NotificationResponse frame for the client; frame is
	// valid only until Notify returns. If the client must be disconnected
	// for its backlog while its server runs a query, Notify returns that
	// server, held, for the Listener to cancel the query with
	// CancelRunning; otherwise nil.
	Notify(frame []byte) (running *pool.ServerConn)
	// CancelRunning cancels the query running on the server Notify
	// returned and ends Notify's hold on it. It may block until ctx ends.
	CancelRunning(ctx context.Context, running *pool.ServerConn)
	// ListenEnded tells the subscriber that the Listener closed: its
	// LISTENs ended with it. Close calls it once per subscriber, for all
	// of them in parallel, and waits for every call to return.
	ListenEnded()
}

// ErrClosed is what Subscribe returns once the Listener is closed.
var ErrClosed = errors.New("listener closed")

// Listener serves LISTEN/UNLISTEN for every client of one pool over a
// single dedicated server connection, so notifications reach clients in
// transaction pooling mode. Each NotificationResponse is fanned out to the
// Subscribers of its channel and delivered between their transactions, as
// PostgreSQL delivers notifications between a session's transactions.
//
// The listener connection is outside the pool's size limits: it is one
// extra server connection per (database, user) that has listening clients.
// The Listener owns it and the goroutines that read it and re-establish
// it; Close ends them. A Listener is safe for concurrent use.
type Listener struct {
	pool *pool.Pool
	log  *zap.Logger

	// mu guards the fields below; no I/O runs under it except the small
	// LISTEN/UNLISTEN writes, which go to a socket only this type writes
	// (the connection is dialled without it: see dial).
	mu     sync.Mutex
	sc     *pool.ServerConn
	subs   map[string]map[Subscriber]struct{}
	closed bool
	done   chan struct{} // closed when the reader goroutine exits
	// dialing is the dial of the listener connection under way, without
	// mu, for the others who would dial to wait on: a Subscribe's (add) or
	// the background reconnect's, one at a time whoever starts it. nil
	// when none runs.
	dialing *dialAttempt
	// live holds, per channel, a channel closed once the server has
	// acknowledged the channel's LISTEN: from then on its notifications
	// reach the listener. pending lists, in the order they were sent on
	// sc, one entry per query awaiting its ReadyForQuery (nil for
	// UNLISTEN).
	live    map[string]chan struct{}
	pending []chan struct{}
	// up is true while the listener connection is attached and every
	// query sent on it since attach is acknowledged (so the LISTENs attach
	// re-issued are live): read without mu (Live), written under it.
	up atomic.Bool

	wg        sync.WaitGroup  // a reconnect in progress
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// New returns a Listener for the clients of p. It dials nothing until the
// first Subscribe; every connection it opens is dialled with p's
// DialConfig. log is used as it is given (the caller names the component
// and the database).
func New(p *pool.Pool, log *zap.Logger) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &Listener{pool: p, log: log, subs: make(map[string]map[Subscriber]struct{}), ctx: ctx, cancel: cancel}
}

// Subscribe adds s to channel, opening the listener connection and
// issuing LISTEN on the server when s is the channel's first subscriber.
// It returns once the server has acknowledged the channel's LISTEN, so that
// every notification committed after the client's LISTEN completes reaches
// it, as PostgreSQL promises. s must be ready for Notify before it is
// called. Subscribe blocks up to 15 seconds for the acknowledgement; it
// returns ErrClosed once the Listener is closed.
//
// If the listener connection has to be opened and cannot be, Subscribe
// returns the dial's error (which wraps pool.Dial's). Subscribers that
// come while that dial is under way wait for it and, if it fails, return
// its error too rather than dial again in turn: with the server
// unreachable, a burst of LISTENs fails after one dial, not one after
// another. A Subscribe that comes after a failed dial dials again.
func (l *Listener) Subscribe(s Subscriber, channel string) error {
	live, err := l.add(s, channel)
	if err != nil {
		return err
	}
	t := time.NewTimer(listenAckTimeout)
	defer t.Stop()
	select {
	case <-live:
		return nil
	case <-t.C:
		l.Unsubscribe(s, channel)
		return fmt.Errorf("LISTEN %s: no answer from the server within %v", channel, listenAckTimeout)
	}
}

// listenAckTimeout bounds the wait for the server to acknowledge a LISTEN.
const listenAckTimeout = 15 * time.Second

// add registers s on channel and returns the channel that is closed once
// its LISTEN is live on the server.
func (l *Listener) add(s Subscriber, channel string) (<-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed && l.sc == nil {
		// The first subscriber (or the first since the connection was
		// lost, unless the background reconnect is dialling) dials,
		// without mu: the reader's acknowledgements and fan-out, and
		// every other Subscribe and Unsubscribe, go on meanwhile.
		// Subscribers that come during a dial, this one's or the
		// reconnect's, wait for it and share its failure: dialling again
		// each in turn would make the last of N wait N dial timeouts for
		// a server that is down.
		if d := l.dialing; d != nil {
			l.mu.Unlock()
			<-d.done
			l.mu.Lock()
			if d.err != nil && !l.closed && l.sc == nil {
				return nil, l.dialFailed(d.err)
			}
			continue // connected (or closed)
		}
		// Only a dialler attaches a connection, and dials are one at a
		// time: l.sc is still nil when this one ends.
		sc, err := l.dial()
		if err != nil {
			return nil, l.dialFailed(err)
		}
		if l.closed {
			sc.Conn.Close() // Close came during the dial
			continue
		}
		if err := l.attach(sc); err != nil {
			return nil, err
		}
	}
	if l.closed {
		return nil, ErrClosed
	}
	set := l.subs[channel]
	if set == nil {
		if err := l.listen(channel); err != nil {
			delete(l.live, channel)
			return nil, err
		}
		set = make(map[Subscriber]struct{})
		l.subs[channel] = set
	}
	set[s] = struct{}{}
	return l.live[channel], nil
}

// A dialAttempt is a dial of the listener connection under way (add,
// reconnectOnce).
type dialAttempt struct {
	// err is the dial's error, nil if it connected; it is written before
	// done is closed and read only after.
	err  error
	done chan struct{} // closed, with mu held, when the dial ends
}

// errDialPanicked is what waiters on a dial that panicked are told; the
// panic itself goes up the dialling subscriber's stack.
var errDialPanicked = errors.New("the dial panicked")

// dial opens a listener connection without mu, which it lets go of and
// takes again (also if the dial panics, so that the caller's deferred
// unlock stays right), with l.dialing set meanwhile for other subscribers
// and the background reconnect to wait on and learn its outcome from. mu
// is held and l.dialing is nil.
func (l *Listener) dial() (*pool.ServerConn, error) {
	d := &dialAttempt{err: errDialPanicked, done: make(chan struct{})}
	l.dialing = d
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.dialing = nil
		close(d.done)
	}()
	cfg := l.pool.Config().Dial
	cfg.Detached = false // its reader waits on it for good
	ctx, cancel := context.WithTimeout(l.ctx, 15*time.Second)
	defer cancel()
	sc, err := pool.Dial(ctx, &cfg)
	d.err = err
	return sc, err
}

// dialFailed is what add returns for a failed dial of the listener
// connection, its own or one it waited on. mu is held.
func (l *Listener) dialFailed(err error) error {
	if l.closed || l.ctx.Err() != nil {
		return ErrClosed // (Close cancelled the dial)
	}
	return fmt.Errorf("dial listener connection: %w", err)
}

// attach makes sc the listener connection, starts its reader and
// listens again on every channel that has subscribers: those kept from a
// connection that broke. It returns the first LISTEN's write error; the
// reader then finds the connection broken too. mu is held.
func (l *Listener) attach(sc *pool.ServerConn) error {
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	l.sc = sc
	l.done = make(chan struct{})
	l.pending = l.pending[:0]
	go l.read(sc, l.done)
	for ch := range l.subs {
		if err := l.listen(ch); err != nil {
			return err
		}
	}
	if len(l.pending) == 0 {
		l.up.Store(true) // nothing to re-issue
	}
	return nil
}

// listen sends LISTEN for channel; l.live[channel] is closed when the
// server acknowledges it. mu is held.
func (l *Listener) listen(channel string) error {
	if l.live == nil {
		l.live = make(map[string]chan struct{})
	}
	ack := make(chan struct{})
	l.live[channel] = ack
	l.pending = append(l.pending, ack)
	return l.send("LISTEN " + quoteIdent(channel))
}

// Unsubscribe removes s from channel ("" = every channel), issuing
// UNLISTEN on the server for a channel left without subscribers.
func (l *Listener) Unsubscribe(s Subscriber, channel string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, set := range l.subs {
		if channel != "" && ch != channel {
			continue
		}
		if _, ok := set[s]; !ok {
			continue
		}
		delete(set, s)
		if len(set) == 0 {
			delete(l.subs, ch)
			delete(l.live, ch)
			if l.sc != nil {
				l.pending = append(l.pending, nil)
				l.send("UNLISTEN " + quoteIdent(ch))
			}
		}
	}
}

// Subscribed reports whether s is subscribed to channel: from the
// Subscribe that added it (as soon as it is called, before the server's
// acknowledgement) to the Unsubscribe that removes it, or Close. It does
// no I/O, but waits for mu, which a LISTEN or UNLISTEN holds while it
// writes to the listener connection.
func (l *Listener) Subscribed(s Subscriber, channel string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.subs[channel][s]
	return ok && !l.closed
}

// Live reports whether the listener connection is up and has re-issued
// every LISTEN it holds since it was last lost: while it is not (it
// reconnects, or the Listener closed), notifications committed meanwhile
// reach no subscriber through it. A channel's own LISTEN is live once its
// Subscribe returned, if Live held then and still does. Live takes no
// lock and does not block, allocate or do I/O.
func (l *Listener) Live() bool { return l.up.Load() }

// send writes a simple query to the listener connection; its responses
// are consumed by read. mu is held.
func (l *Listener) send(sql string) error {
	l.sc.Wr.SetBuffer(protocol.AppendQuery(l.sc.Wr.Buffer(), sql))
	return l.sc.Wr.Flush()
}

// read consumes the listener connection: notifications are fanned out, a
// ReadyForQuery acknowledges the oldest query sent, everything else
// (CommandComplete, errors) is dropped.
func (l *Listener) read(sc *pool.ServerConn, done chan struct{}) {
	defer close(done)
	for {
		frame, err := sc.Rd.Next()
		if err != nil {
			l.lost(sc, err)
			return
		}
		if frame[0] == protocol.MsgReadyForQuery {
			l.acknowledge(sc)
			continue
		}
		if frame[0] != protocol.MsgNotification {
			continue
		}
		body := protocol.Body(frame)
		if len(body) < 5 {
			continue
		}
		ch, _, ok := protocol.CString(body[4:])
		if !ok {
			continue
		}
		l.mu.Lock()
		set := l.subs[string(ch)]
		targets := make([]Subscriber, 0, len(set))
		for s := range set {
			targets = append(targets, s)
		}
		l.mu.Unlock()
		for _, s := range targets {
			if running := s.Notify(frame); running != nil {
				// The client was disconnected for its backlog while its
				// server ran a query: cancel it without holding up the
				// other subscribers. Close waits for it through wg
				// (added here, before read returns and Close can wait).
				l.wg.Add(1)
				go func() {
					defer l.wg.Done()
					s.CancelRunning(l.ctx, running)
				}()
			}
		}
	}
}

// acknowledge marks the oldest query sent on sc as answered.
func (l *Listener) acknowledge(sc *pool.ServerConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sc != sc || len(l.pending) == 0 {
		return
	}
	head := l.pending[0]
	l.pending = append(l.pending[:0], l.pending[1:]...)
	if len(l.pending) == 0 {
		// Before the ack below: a LISTEN that returns finds the
		// connection's re-issued LISTENs live too.
		l.up.Store(true)
	}
	if ack := head; ack != nil {
		close(ack)
	}
}

// lost handles a broken listener connection: subscriptions are kept and
// re-issued on a new connection, which reconnect opens in the background
// (or the next Subscribe, if reconnect has given up for want of
// subscribers); notifications sent meanwhile are lost, as they are for a
// PostgreSQL session whose connection breaks.
func (l *Listener) lost(sc *pool.ServerConn, err error) {
	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.wg.Add(1) // under mu, so Close cannot be waiting yet
	}
	if l.sc == sc {
		l.sc = nil
		l.up.Store(false)
		// Waiters are let go: the subscription stands and is re-issued
		// on the next connection.
		for _, ack := range l.pending {
			if ack != nil {
				close(ack)
			}
		}
		l.pending = l.pending[:0]
	}
	l.mu.Unlock()
	sc.Conn.Close()
	if closed {
		return
	}
	l.log.Warn("listener connection lost; resubscribing", zap.Error(err))
	go func() {
		defer l.wg.Done()
		l.reconnect()
	}()
}

// reconnect re-establishes the listener connection in the background,
// retrying with a capped backoff through a restart or failover (no
// writable host yet), until it is connected, the Listener closes, or no
// subscriber is left. Close cancels it and waits for it.
func (l *Listener) reconnect() {
	delay := 50 * time.Millisecond
	for {
		over, err := l.reconnectOnce()
		if over {
			return
		}
		l.log.Warn("listener reconnect failed; retrying", zap.Duration("in", delay), zap.Error(err))
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// reconnectOnce makes one attempt of reconnect's and reports whether the
// reconnect is over (connected, closed, or no subscriber left) and, if
// not, why. Its dial is the Listener's one dial at a time (l.dialing), like
// a Subscribe's: a Subscribe that comes meanwhile waits for it and shares
// its outcome rather than open a second connection, one of the two to be
// closed; and if a Subscribe is dialling, the attempt is to wait for that
// dial.
func (l *Listener) reconnectOnce() (over bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	idle := func() bool { return l.closed || l.sc != nil || len(l.subs) == 0 }
	if idle() {
		return true, nil
	}
	if d := l.dialing; d != nil {
		l.mu.Unlock()
		<-d.done
		l.mu.Lock()
		if d.err == nil {
			// Connected. If that connection is lost already, its loss
			// started a reconnect of its own.
			return true, nil
		}
		return idle(), d.err
	}
	sc, err := l.dial()
	if err != nil {
		return idle(), err
	}
	if l.closed || l.sc != nil {
		sc.Conn.Close()
		return true, nil
	}
	// Attached even if every subscriber left during the dial, as a
	// connection stays when its last subscriber leaves: a Subscribe that
	// waited on the dial is about to use it.
	if err := l.attach(sc); err != nil {
		return true, nil // the reader finds it broken and reconnects again
	}
	l.log.Info("listener connection re-established", zap.Int("channels", len(l.subs)))
	return true, nil
}

// Close stops the listener and waits for its reader. Its subscribers are
// doomed (ListenEnded): their LISTENs end with it, and a client must not
// wait in silence for notifications that can no longer come. Close blocks
// until every ListenEnded has returned; a Listener closed before anyone
// subscribed returns at once. It cancels the dial in progress, a
// Subscribe's or the background reconnect's. A second call waits for the
// first and does nothing more.
func (l *Listener) Close() { l.closeOnce.Do(l.close) }

func (l *Listener) close() {
	l.cancel()
	l.mu.Lock()
	l.closed = true
	l.up.Store(false)
	sc, done := l.sc, l.done
	l.sc = nil
	subscribers := make(map[Subscriber]struct{})
	for _, subs := range l.subs {
		for s := range subs {
			subscribers[s] = struct{}{}
		}
	}
	for _, ack := range l.pending {
		if ack != nil {
			close(ack)
		}
	}
	l.pending = nil
	l.mu.Unlock()
	if sc != nil {
		sc.Conn.Close()
		<-done
	}
	l.wg.Wait()
	// In parallel: a running query's cancel may wait cancel_wait_timeout.
	var wg sync.WaitGroup
	for s := range subscribers {
		wg.Go(s.ListenEnded)
	}
	wg.Wait()
}

// quoteIdent quotes s as an SQL identifier, doubling its double quotes.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
