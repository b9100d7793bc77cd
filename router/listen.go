package router

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

// listener serves LISTEN/UNLISTEN for every client of one pool over a single
// dedicated server connection, so notifications reach clients in transaction
// pooling mode. Each NotificationResponse is fanned out to the sessions
// subscribed to its channel and delivered between their transactions, as
// PostgreSQL delivers notifications between a session's transactions.
//
// The listener connection is outside the pool's size limits: it is one
// extra server connection per (database, user) that has listening clients.
type listener struct {
	entry *poolEntry
	log   *zap.Logger

	// mu guards the fields below; no I/O runs under it except the small
	// LISTEN/UNLISTEN writes, which go to a socket only this type writes.
	mu     sync.Mutex
	sc     *pool.ServerConn
	subs   map[string]map[*session]struct{}
	closed bool
	done   chan struct{} // closed when the reader goroutine exits
	// live holds, per channel, a channel closed once the server has
	// acknowledged the channel's LISTEN: from then on its notifications
	// reach the listener. pending lists, in the order they were sent on
	// sc, one entry per query awaiting its ReadyForQuery (nil for
	// UNLISTEN).
	live    map[string]chan struct{}
	pending []chan struct{}

	wg     sync.WaitGroup  // a reconnect in progress
	ctx    context.Context // canceled by close
	cancel context.CancelFunc
}

// listenerFor returns the pool's listener, creating it. Once the entry is
// closed, a listener made now starts closed: nothing would close it later.
func (e *poolEntry) listenerFor(log *zap.Logger) *listener {
	e.listenMu.Lock()
	defer e.listenMu.Unlock()
	if e.listen == nil {
		ctx, cancel := context.WithCancel(context.Background())
		e.listen = &listener{entry: e, log: log.With(zap.String("component", "listener"), zap.String("database", e.dbName)),
			subs: make(map[string]map[*session]struct{}), ctx: ctx, cancel: cancel}
		if e.listenClosed {
			e.listen.closed = true
			cancel()
		}
	}
	return e.listen
}

// listenerClosed reports whether the entry's listener is closed or will be
// made closed: a reload replaced its pools.
func (e *poolEntry) listenerClosed() bool {
	e.listenMu.Lock()
	defer e.listenMu.Unlock()
	return e.listenClosed
}

// listener returns the listener a session subscribes through. A session
// still on pools a reload replaced (it has needed no server since) moves to
// the new pools first: its LISTEN then lives on their listener, like every
// other client's of its database.
// (Linked inside a transaction, it stays: the old listener refuses.)
func (ss *session) listener() *listener {
	if ss.entry.listenerClosed() && !ss.isLinked() {
		ss.joinPump() // refreshEntry repoints the client's byte counters
		ss.refreshEntry()
	}
	return ss.entry.listenerFor(ss.srv.log)
}

// subscribe adds ss to channel, opening the listener connection and
// issuing LISTEN on the server when ss is the channel's first subscriber.
// It returns once the server has acknowledged the channel's LISTEN, so that
// every notification committed after the client's LISTEN completes reaches
// it, as PostgreSQL promises.
func (l *listener) subscribe(ss *session, channel string) error {
	ss.ensureRare() // for the mailbox, before notify can reach ss
	live, err := l.add(ss, channel)
	if err != nil {
		return err
	}
	t := time.NewTimer(listenAckTimeout)
	defer t.Stop()
	select {
	case <-live:
		return nil
	case <-t.C:
		l.unsubscribe(ss, channel)
		return fmt.Errorf("LISTEN %s: no answer from the server within %v", channel, listenAckTimeout)
	}
}

// listenAckTimeout bounds the wait for the server to acknowledge a LISTEN.
const listenAckTimeout = 15 * time.Second

// add registers ss on channel and returns the channel that is closed once
// its LISTEN is live on the server.
func (l *listener) add(ss *session, channel string) (<-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errDraining
	}
	if l.sc == nil {
		cfg := l.entry.pool.Config().Dial
		cfg.Detached = false // its reader waits on it for good
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		sc, err := pool.Dial(ctx, &cfg)
		cancel()
		if err != nil {
			return nil, err
		}
		l.attach(sc)
		// Channels kept from a connection that broke and could not be
		// re-established are listened to again.
		for ch := range l.subs {
			if err := l.listen(ch); err != nil {
				return nil, err
			}
		}
	}
	set := l.subs[channel]
	if set == nil {
		if err := l.listen(channel); err != nil {
			delete(l.live, channel)
			return nil, err
		}
		set = make(map[*session]struct{})
		l.subs[channel] = set
	}
	set[ss] = struct{}{}
	return l.live[channel], nil
}

// attach makes sc the listener connection and starts its reader. mu is
// held.
func (l *listener) attach(sc *pool.ServerConn) {
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	l.sc = sc
	l.done = make(chan struct{})
	l.pending = l.pending[:0]
	go l.read(sc, l.done)
}

// listen sends LISTEN for channel; l.live[channel] is closed when the
// server acknowledges it. mu is held.
func (l *listener) listen(channel string) error {
	if l.live == nil {
		l.live = make(map[string]chan struct{})
	}
	ack := make(chan struct{})
	l.live[channel] = ack
	l.pending = append(l.pending, ack)
	return l.send("LISTEN " + quoteIdent(channel))
}

// unsubscribe removes ss from channel ("" = every channel).
func (l *listener) unsubscribe(ss *session, channel string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, set := range l.subs {
		if channel != "" && ch != channel {
			continue
		}
		if _, ok := set[ss]; !ok {
			continue
		}
		delete(set, ss)
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

// send writes a simple query to the listener connection; its responses
// are consumed by read. mu is held.
func (l *listener) send(sql string) error {
	l.sc.Wr.SetBuffer(protocol.AppendQuery(l.sc.Wr.Buffer(), sql))
	return l.sc.Wr.Flush()
}

// read consumes the listener connection: notifications are fanned out, a
// ReadyForQuery acknowledges the oldest query sent, everything else
// (CommandComplete, errors) is dropped.
func (l *listener) read(sc *pool.ServerConn, done chan struct{}) {
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
		targets := make([]*session, 0, len(set))
		for ss := range set {
			targets = append(targets, ss)
		}
		l.mu.Unlock()
		for _, ss := range targets {
			if running := ss.notify(frame); running != nil {
				// The client was disconnected for its backlog while its
				// server ran a query: cancel it without holding up the
				// other subscribers. close waits for it through wg
				// (added here, before read returns and close can wait).
				l.wg.Add(1)
				go func() {
					defer l.wg.Done()
					ss.cancelRunning(l.ctx, running)
				}()
			}
		}
	}
}

// acknowledge marks the oldest query sent on sc as answered.
func (l *listener) acknowledge(sc *pool.ServerConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sc != sc || len(l.pending) == 0 {
		return
	}
	if ack := l.pending[0]; ack != nil {
		close(ack)
	}
	l.pending = append(l.pending[:0], l.pending[1:]...)
}

// lost handles a broken listener connection: subscriptions are kept and
// re-issued on a new connection when the next client subscribes;
// notifications sent meanwhile are lost, as they are for a PostgreSQL
// session whose connection breaks.
func (l *listener) lost(sc *pool.ServerConn, err error) {
	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.wg.Add(1) // under mu, so close cannot be waiting yet
	}
	if l.sc == sc {
		l.sc = nil
		// Waiters are let go: the subscription stands and is re-issued
		// on the next connection.
		for _, ack := range l.pending {
			if ack != nil {
				close(ack)
			}
		}
		l.pending = l.pending[:0]
	}
	channels := make([]string, 0, len(l.subs))
	for ch := range l.subs {
		channels = append(channels, ch)
	}
	l.mu.Unlock()
	sc.Conn.Close()
	if closed {
		return
	}
	l.log.Warn("listener connection lost; resubscribing", zap.Error(err))
	// Re-establish in the background with the same subscriptions, retrying
	// with a capped backoff through a restart or failover (no writable
	// host yet); close cancels and waits for it. Dials run without the
	// lock.
	go func() {
		defer l.wg.Done()
		delay := 50 * time.Millisecond
		for {
			cfg := l.entry.pool.Config().Dial
			cfg.Detached = false
			ctx, cancel := context.WithTimeout(l.ctx, 15*time.Second)
			nsc, err := pool.Dial(ctx, &cfg)
			cancel()
			if err == nil {
				l.resubscribe(nsc, channels)
				return
			}
			l.mu.Lock()
			idle := l.closed || l.sc != nil || len(l.subs) == 0
			l.mu.Unlock()
			if idle {
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
	}()
}

// resubscribe makes nsc the listener connection and listens again on the
// channels that still have subscribers, unless the listener closed or a
// subscriber connected one meanwhile.
func (l *listener) resubscribe(nsc *pool.ServerConn, channels []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.sc != nil || len(l.subs) == 0 {
		nsc.Conn.Close()
		return
	}
	l.attach(nsc)
	for _, ch := range channels {
		if _, ok := l.subs[ch]; ok {
			l.listen(ch)
		}
	}
	l.log.Info("listener connection re-established", zap.Int("channels", len(l.subs)))
}

// close stops the listener and waits for its reader. Its subscribers are
// doomed: their LISTENs end with it, and a client must not wait in silence
// for notifications that can no longer come.
func (l *listener) close() {
	l.cancel()
	l.mu.Lock()
	l.closed = true
	sc, done := l.sc, l.done
	l.sc = nil
	subscribers := make(map[*session]struct{})
	for _, subs := range l.subs {
		for ss := range subs {
			subscribers[ss] = struct{}{}
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
	for ss := range subscribers {
		wg.Go(func() {
			ss.mu.Lock()
			running, first := ss.markDoomed(evDoomListen)
			ss.mu.Unlock()
			ss.settleDoom(running, first, "the database's LISTEN connection closed (a reload replaced its pools): disconnecting the listening client")
		})
	}
	wg.Wait()
}

// errListenEnded is what a listening client is told when the listener its
// LISTENs live on closes.
var errListenEnded = protocol.Fatal(protocol.SQLStateAdminShutdown,
	"the database's configuration changed: this connection's LISTEN ended; reconnect and LISTEN again")

func quoteIdent(s string) string {
	b := appendIdent(nil, s)
	return string(b)
}

// maxMailbox bounds the notifications queued for one client, in bytes.
// They wait while the client's transaction runs, or while it does not read
// its socket; without a bound, one such client listening on a busy channel
// would make pgferry hold every notification sent meanwhile.
const maxMailbox = 8 << 20

// errNotificationBacklog disconnects a client whose queued notifications
// passed maxMailbox. PostgreSQL uses 54000 when its own notification queue
// is full.
var errNotificationBacklog = func() *protocol.Error {
	e := protocol.Fatal(protocol.SQLStateProgramLimitExceeded,
		fmt.Sprintf("more than %d MiB of notifications are waiting for this client; it was disconnected", maxMailbox>>20))
	e.Hint = "Notifications wait while the client's transaction is open or while it does not read them; keep transactions of listening clients short."
	return e
}()

// notify queues a notification for the client and wakes it if it is
// between transactions. A client whose backlog passes maxMailbox is
// disconnected rather than notifications being dropped unseen; if its
// server is running a query, notify returns that server, held, for the
// caller to cancel the query (cancelRunning).
func (ss *session) notify(frame []byte) (running *pool.ServerConn) {
	ss.mu.Lock()
	if ss.has(evDoomed) {
		ss.mu.Unlock()
		return nil
	}
	// subscribe made rare before ss could be reached here; it must not be
	// made here, by another goroutine: the owner reads rare without mu.
	r := ss.rare
	if len(r.mailbox)+len(frame) > maxMailbox {
		r.mailbox = nil
		running, first := ss.markDoomed(evDoomBacklog)
		ss.mu.Unlock()
		if first {
			ss.announceDoom("notification backlog over the per-client limit: disconnecting the client")
		}
		return running
	}
	r.mailbox = append(r.mailbox, frame...)
	linked := ss.server != nil
	ss.mu.Unlock()
	if !linked {
		ss.wake()
	}
	return nil
}

// deliverNotifications writes queued notifications to the client. It runs
// on the session goroutine with no server linked.
func (ss *session) deliverNotifications() error {
	ss.mu.Lock()
	if ss.server != nil || ss.mailLen() == 0 {
		ss.mu.Unlock()
		return nil
	}
	box := ss.rare.mailbox
	ss.rare.mailbox = nil
	ss.mu.Unlock()
	ss.joinPump()
	ss.wr.Append(box)
	return ss.wr.Flush()
}

// handleListen serves LISTEN and UNLISTEN outside a transaction through the
// pool's listener. It reports whether it answered the query.
func (ss *session) handleListen(c classify.Class) (bool, error) {
	ss.mu.Lock()
	linked := ss.server != nil
	ss.mu.Unlock()
	if linked {
		return false, nil // inside a transaction: pin instead (see interceptQuery)
	}
	tag := "UNLISTEN"
	if c.Listen != "" {
		tag = "LISTEN"
		if err := ss.listener().subscribe(ss, c.Listen); err != nil {
			return false, ss.acquireError(err)
		}
		ss.listening = true
	} else if ss.listening {
		ss.entry.listenerFor(ss.srv.log).unsubscribe(ss, c.Unlisten)
	}
	ss.joinPump()
	b := protocol.AppendCommandComplete(ss.wr.Buffer(), tag)
	ss.wr.SetBuffer(protocol.AppendReadyForQuery(b, protocol.TxIdle))
	return true, ss.flushClientIfIdle()
}

// mailLen is how many bytes of notifications wait for the client. mu is
// held.
func (ss *session) mailLen() int {
	if ss.rare == nil {
		return 0
	}
	return len(ss.rare.mailbox)
}
