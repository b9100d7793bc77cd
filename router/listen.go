package router

import (
	"context"
	"errors"
	"fmt"

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
// LISTEN. A listener that closed meanwhile reads as errDraining.
func (ss *session) subscribe(channel string) error {
	l := ss.listener()
	ss.ensureRare() // for the mailbox, before Notify can reach ss
	err := l.Subscribe(ss, channel)
	if errors.Is(err, notify.ErrClosed) {
		return errDraining
	}
	return err
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
}

// listenLinked serves a LISTEN on channel sent while the client has a
// server linked (inside a transaction, or pinned to it) through the pool's
// listener, as handleListen does between transactions: so each
// subscription has one home, whichever way the client is tied to its
// server, and its UNLISTEN and its notifications work the same. The
// statement itself, sql, is blanked in place: the server runs an empty
// query, whose EmptyQueryResponse the client gets as CommandComplete
// LISTEN (execTag), in order with the server's other answers. The LISTEN
// takes effect at once, not at commit (nor is it undone by a rollback), as
// through the extended protocol. In a failed transaction it goes to the
// server as it is, which refuses it as PostgreSQL does.
func (ss *session) listenLinked(channel string, sql []byte) error {
	ss.mu.Lock()
	failed := ss.q.n == 0 && ss.status == protocol.TxFailed
	ss.mu.Unlock()
	if failed {
		return nil
	}
	if err := ss.subscribe(channel); err != nil {
		return ss.acquireError(err)
	}
	ss.listening = true
	for i := range sql {
		sql[i] = ' ' // (PostgreSQL reads blanks alone as an empty query)
	}
	ss.execTag = tagListen
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
		if err := ss.subscribe(c.Listen); err != nil {
			return false, ss.acquireError(err)
		}
		ss.listening = true
	} else {
		ss.applyState(c)
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

// A client pinned to its server may also listen on it directly: a LISTEN
// among other statements of one Query, or of a channel pgferry cannot
// read, runs on the server (and pins). A channel it listens on both ways
// (in either order, whatever its spelling) would reach it twice, once from
// its server and once from pgferry's listener, where PostgreSQL delivers
// each notification once. pgferry's listener is the channel's home then:
// the notifications the server sends on a channel pgferry's listener
// serves the client are dropped (heardAside). That set is known exactly
// and changes as the client's requests go (Subscribe is live before its
// LISTEN is answered, an UNLISTEN ends it as it goes, and goes to the
// server too), where what the server listens on is not (a LISTEN among
// other statements is not named by classify, and takes effect only when
// its transaction commits).

// forwardNotification relays a NotificationResponse of size bytes, the
// server's next frame, for relayServer in transaction mode, with
// protocol.Reader.ForwardRun's errors; it drops it if pgferry's listener
// delivers its channel to the client (heardAside). mu is not held.
func (ss *session) forwardNotification(rd *protocol.Reader, wr *protocol.Writer, size int) error {
	if size > protocol.BufferSize {
		// Not a notification PostgreSQL sends (its payload is shorter
		// than 8000 bytes, its channel a name): streamed as it is.
		return rd.ForwardRun(wr, protocol.MsgNotification, size)
	}
	frame, err := rd.NextPeeked(size)
	if err != nil {
		return err
	}
	if !ss.heardAside(frame) {
		wr.Append(frame)
	}
	return nil
}

// heardAside reports whether frame, a NotificationResponse the client's
// own server sent, is on a channel pgferry's listener delivers to the
// client: one it is subscribed to there. mu is not held.
func (ss *session) heardAside(frame []byte) bool {
	l := ss.entry.listenerMade()
	if l == nil {
		return false
	}
	ch, ok := notificationChannel(frame)
	if !ok {
		return false
	}
	return l.Subscribed(ss, string(ch))
}

// notificationChannel returns the channel a NotificationResponse frame
// names (message type 'A': process ID, channel, payload). It is valid as
// long as frame.
func notificationChannel(frame []byte) ([]byte, bool) {
	body := protocol.Body(frame)
	if len(body) < 5 {
		return nil, false
	}
	ch, _, ok := protocol.CString(body[4:])
	return ch, ok
}
