package router

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
	"github.com/pgferry/pgferry/router/notify"
)

// A session is the subscriber of a pool's listener (router/notify): the
// listener's reader queues notifications in the session's mailbox
// (Notify), and its Close dooms the session (ListenEnded).
var _ notify.Subscriber = (*session)(nil)

// listenerFor returns the pool's listener, creating it. Once the entry is
// closed, a listener made now starts closed: nothing would close it later.
func (e *poolEntry) listenerFor(log *zap.Logger) *notify.Listener {
	e.listenMu.Lock()
	defer e.listenMu.Unlock()
	if e.listen == nil {
		e.listen = notify.New(e.pool, log.With(zap.String("component", "listener"), zap.String("database", e.dbName)))
		if e.listenClosed {
			e.listen.Close() // no subscriber yet: returns at once
		}
	}
	return e.listen
}

// listenerMade returns the pool's listener if one was made, else nil.
func (e *poolEntry) listenerMade() *notify.Listener {
	e.listenMu.Lock()
	defer e.listenMu.Unlock()
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
func (ss *session) listener() *notify.Listener {
	if ss.entry.listenerClosed() && !ss.isLinked() {
		ss.joinPump() // refreshEntry repoints the client's byte counters
		ss.refreshEntry()
	}
	return ss.entry.listenerFor(ss.srv.log)
}

// subscribe adds ss to channel through its listener (notify.Listener.
// Subscribe): it returns once the server has acknowledged the channel's
// LISTEN. A listener that closed meanwhile reads as errDraining. fresh
// reports that ss was not subscribed to channel before.
func (ss *session) subscribe(channel string) (fresh bool, err error) {
	l := ss.listener()
	ss.ensureRare() // for the mailbox, before Notify can reach ss
	ss.reapUnheard(l)
	fresh = !l.Subscribed(ss, channel)
	err = l.Subscribe(ss, channel)
	if errors.Is(err, notify.ErrClosed) {
		return false, errDraining
	}
	return fresh, err
}

// CancelRunning cancels the query Notify returned the server of
// (notify.Subscriber); see cancelRunning.
func (ss *session) CancelRunning(ctx context.Context, running *pool.ServerConn) {
	ss.cancelRunning(ctx, running)
}

// ListenEnded dooms a listening client whose listener closed
// (notify.Subscriber): its LISTENs ended, and it must not wait in silence
// for notifications that can no longer come.
func (ss *session) ListenEnded() {
	ss.mu.Lock()
	running, first := ss.markDoomed(evDoomListen)
	ss.mu.Unlock()
	ss.settleDoom(running, first, "the database's LISTEN connection closed (a reload replaced its pools): disconnecting the listening client")
}

// errListenEnded is what a listening client is told when the listener its
// LISTENs live on closes.
var errListenEnded = protocol.Fatal(protocol.SQLStateAdminShutdown,
	"the database's configuration changed: this connection's LISTEN ended; reconnect and LISTEN again")

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

// Notify queues a notification for the client and wakes it if it is
// between transactions (notify.Subscriber). A client whose backlog passes
// maxMailbox is disconnected rather than notifications being dropped
// unseen; if its server is running a query, Notify returns that server,
// held, for the caller to cancel the query (CancelRunning).
func (ss *session) Notify(frame []byte) (running *pool.ServerConn) {
	ss.mu.Lock()
	if ss.has(evDoomed) {
		ss.mu.Unlock()
		return nil
	}
	// subscribe made rare before ss could be reached here; it must not be
	// made here, by another goroutine: the owner reads rare without mu.
	r := ss.rare
	if len(r.listen.unheard) > 0 && r.listen.isUnheard(frame) {
		ss.mu.Unlock() // (a LISTEN the server skipped: listensSkipped)
		return nil
	}
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
	if linked && !ss.pumpKick && ss.q.n == 0 && ss.status == protocol.TxIdle && (ss.pinned || !ss.txnMode) {
		// Tied to its server, which is idle between transactions: its
		// relay, waiting for the server, delivers them (takeKick).
		ss.pumpKick = true
		ss.server.Interrupt() // under mu: the server is still this session's
	}
	ss.mu.Unlock()
	if !linked {
		ss.wake()
	}
	return nil
}

// mailToLinked appends the notifications waiting for a client whose server
// is linked to the client's Writer, if that server is idle between
// transactions (ReadyForQuery 'I', nothing more owed), as PostgreSQL
// delivers them, before that ReadyForQuery: a client pinned to its server
// (or in session mode) is never without one, so deliverNotifications
// would never run for it. Whoever relays the server's answers calls it,
// the pump or the session goroutine inline, the client's only writer
// meanwhile: when a ReadyForQuery ends a transaction (before appending it;
// a transaction that releases its server so delivers without a wake), and
// when Notify interrupted its wait for an idle server (takeKick). mu is
// held.
func (ss *session) mailToLinked() {
	if ss.rare == nil || len(ss.rare.mailbox) == 0 || ss.q.n != 0 || ss.status != protocol.TxIdle {
		return
	}
	ss.wr.Append(ss.rare.mailbox)
	ss.rare.mailbox = nil
	clear(ss.rare.listen.marks) // (of requests answered: nothing is owed)
	ss.rare.listen.marks = ss.rare.listen.marks[:0]
}

// deliverNotifications writes queued notifications to the client. It runs
// on the session goroutine with no server linked.
func (ss *session) deliverNotifications() error {
	if ss.listening {
		// Subscriptions a skipped or undone LISTEN or a committed
		// UNLISTEN ended (unhear woke the session for them).
		if l := ss.entry.listenerMade(); l != nil {
			ss.reapUnheard(l)
		}
	}
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
func (ss *session) handleListen(c *classify.Class) (bool, error) {
	ss.mu.Lock()
	linked := ss.server != nil
	ss.mu.Unlock()
	if linked {
		return false, nil // inside a transaction, or pinned: see listenLinked
	}
	tag := "UNLISTEN"
	if c.Listen != "" {
		tag = "LISTEN"
		if _, err := ss.subscribe(c.Listen); err != nil {
			return false, ss.acquireError(err)
		}
		ss.listening = true
	}
	ss.joinPump() // (the client's writer from here: its served set too)
	if c.Listen != "" {
		// (No UNLISTEN waits to settle: none is linked.)
		ss.serveChannel(c.Listen, ss.entry.listenerMade(), 0)
	} else if ss.listening {
		// No server runs it: it takes effect as it is answered.
		ss.entry.listenerFor(ss.srv.log).Unsubscribe(ss, c.Unlisten)
		ss.unserveChannel(c.Unlisten, c.UnlistenAll)
	}
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

// reapUnheard unsubscribes ss from l's channels that only skipped LISTENs
// subscribed it to (listenBook.unheard). It runs on the session's
// goroutine, before it subscribes; until then those channels' notifications
// are dropped (Notify). mu is not held.
func (ss *session) reapUnheard(l *notify.Listener) {
	ss.mu.Lock()
	reap := slices.Clone(ss.rare.listen.unheard)
	ss.mu.Unlock()
	if len(reap) == 0 {
		return
	}
	for _, ch := range reap {
		l.Unsubscribe(ss, ch)
	}
	// Dropped only now, so that Notify keeps dropping until the
	// subscription is gone. (Only this goroutine adds a LISTEN that could
	// make one of them fresh again, and listensSkipped adds to the list
	// only: what it added meanwhile stays.)
	ss.mu.Lock()
	b := &ss.rare.listen
	b.unheard = slices.DeleteFunc(b.unheard, func(ch string) bool { return slices.Contains(reap, ch) })
	ss.mu.Unlock()
}

// isUnheard reports whether frame, a NotificationResponse, is on one of
// the channels in unheard.
func (b *listenBook) isUnheard(frame []byte) bool {
	ch, ok := notificationChannel(frame)
	if !ok {
		return false
	}
	for _, u := range b.unheard {
		if string(ch) == u {
			return true
		}
	}
	return false
}

// dropMail drops the notifications on channel waiting in the mailbox. mu
// is held.
func (ss *session) dropMail(channel string) {
	ss.dropMailBefore(channel, len(ss.rare.mailbox))
}

// dropMailBefore drops the notifications on channel among the first limit
// bytes of the mailbox, and moves the marks after those it drops
// (listenBook.marks) back by their length. mu is held.
func (ss *session) dropMailBefore(channel string, limit int) {
	box := ss.rare.mailbox
	marks := ss.rare.listen.marks
	kept := box[:0]
	off := 0
	for len(box) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(box[1:5]))
		if n < 5 || n > len(box) {
			break // (Notify queues whole frames only)
		}
		if ch, ok := notificationChannel(box[:n]); off >= limit || !ok || string(ch) != channel {
			kept = append(kept, box[:n]...) // (copies forward within box)
		} else {
			for i := range marks {
				if marks[i].at > len(kept) {
					marks[i].at -= n
				}
			}
		}
		off += n
		box = box[n:]
	}
	ss.rare.mailbox = kept
}
