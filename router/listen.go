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
// server as it is, which refuses it as PostgreSQL does; sent behind
// requests still owed, it may find the transaction failed by one of them,
// and is refused then at its answer (listenQueryAnswered).
func (ss *session) listenLinked(channel string, sql []byte) error {
	ss.mu.Lock()
	failed := ss.q.n == 0 && ss.status == protocol.TxFailed
	ss.mu.Unlock()
	if failed {
		return nil
	}
	fresh, err := ss.subscribe(channel)
	if err != nil {
		return ss.acquireError(err)
	}
	ss.listening = true
	ss.listenSent(channel, fresh)
	for i := range sql {
		sql[i] = ' ' // (PostgreSQL reads blanks alone as an empty query)
	}
	ss.execTag = tagListen
	return nil
}

// deliverNotifications writes queued notifications to the client. It runs
// on the session goroutine with no server linked.
func (ss *session) deliverNotifications() error {
	if ss.listening {
		// Subscriptions a skipped LISTEN or an answered UNLISTEN ended
		// (unhear woke the session for them).
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
		ss.serveChannel(c.Listen, ss.entry.listenerMade())
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

// A client pinned to its server may also listen on it directly: a LISTEN
// among other statements of one Query, or of a channel pgferry cannot
// read, runs on the server (and pins). A channel it listens on both ways
// (in either order, whatever its spelling) would reach it twice, once from
// its server and once from pgferry's listener, where PostgreSQL delivers
// each notification once. pgferry's listener is the channel's home then:
// the notifications the server sends on a channel pgferry's listener
// serves the client are dropped (heardAside), but only while the
// listener's copy is sure to come. So the session keeps its own set of
// the channels the listener serves it (listenBook.served), switched on as
// a LISTEN's answer is handed to the client (the listener acknowledged its
// LISTEN before that: subscribe) and off as an UNLISTEN's is, and asks the
// listener only whether it is up (notify.Listener.Live: not while it
// reconnects), without its lock. Until the switch a notification comes
// from the server alone; the listener's copy of one committed after its
// acknowledgement and sent by the server before it ran the LISTEN's empty
// query would come too (a window of one round trip to the server). What
// the server listens on is not known (a LISTEN among other statements is
// not named by classify, and takes effect only when its transaction
// commits); the server's copies on other channels are relayed.

// servedChannel is a channel pgferry's listener serves the client, and
// that listener.
type servedChannel struct {
	channel string
	l       *notify.Listener
}

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
// own server sent, is on a channel pgferry's listener serves the client
// (listenBook.served) while that listener is up. Its caller relays the
// server's answers, so it is the client's writer, which owns the set. mu
// is not held; no listener lock is taken.
func (ss *session) heardAside(frame []byte) bool {
	ss.mu.Lock()
	r := ss.rare // (made by the session's goroutine, maybe as this relays)
	ss.mu.Unlock()
	if r == nil || len(r.listen.served) == 0 {
		return false
	}
	ch, ok := notificationChannel(frame)
	if !ok {
		return false
	}
	for _, sc := range r.listen.served {
		if sc.channel == string(ch) {
			return sc.l.Live()
		}
	}
	return false
}

// serveChannel switches channel on in the set of channels l serves the
// client (listenBook.served), as the answer to its LISTEN is handed to
// the client. The client's writer calls it: the relay (mu held), or the
// session's goroutine with no server linked (mu not held).
func (ss *session) serveChannel(channel string, l *notify.Listener) {
	if l == nil {
		return
	}
	b := &ss.rare.listen
	for i := range b.served {
		if b.served[i].channel == channel {
			b.served[i].l = l
			return
		}
	}
	b.served = append(b.served, servedChannel{channel: channel, l: l})
}

// unserveChannel switches channel (every channel with all) off in the
// client's served set, as the answer to its UNLISTEN is handed to the client; it
// reports whether channel was on. The client's writer calls it.
func (ss *session) unserveChannel(channel string, all bool) bool {
	if ss.rare == nil {
		return false
	}
	b := &ss.rare.listen
	if all {
		clear(b.served)
		b.served = b.served[:0]
		return true
	}
	for i := range b.served {
		if b.served[i].channel == channel {
			b.served = slices.Delete(b.served, i, i+1)
			return true
		}
	}
	return false
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

// A LISTEN that pgferry's listener serves for a client with a server
// linked (the Execute of a LISTEN portal, interceptExecute; a LISTEN in a
// simple Query, listenLinked) subscribes the client as its request goes to
// the server, so that the subscription is live before the client's
// CommandComplete LISTEN. But after an error in the extended protocol the
// server skips every message up to the next Sync, a Query too (postgres.c:
// ignore_till_sync): such a LISTEN never runs, its client gets only the
// error, and it must subscribe the client to nothing. So each one is noted
// (listenSent) until its request is answered or skipped, and dropSkipped,
// which drops the expectations of the requests the server skips (those
// owed when the error comes, and those sent after it when their Sync's
// ReadyForQuery comes), says which were (listensSkipped): a subscription
// that only skipped LISTENs made ends. (In a failed transaction the
// server refuses the Bind of a LISTEN's portal, and skips its Execute so.)

// listenBook is what a session notes of the LISTENs it sent to its server
// (rareState.listen). Guarded by mu.
type listenBook struct {
	// sent lists LISTENs whose requests may still be owed, in the order
	// they were sent; it is emptied when nothing is owed (listenSent).
	sent []sentListen
	// unheard lists channels whose subscription only skipped LISTENs made.
	// Notify drops their notifications, and the relay relays the
	// server's own (heardAside), until the session's goroutine
	// unsubscribes them (reapUnheard): where the skip is seen mu is held,
	// and the listener's lock must not be waited for under mu (the
	// listener writes to its connection under it, and that connection's
	// reader may be waiting for mu in Notify).
	unheard []string
	// unlistens lists UNLISTENs (and DISCARD ALLs) sent to the server
	// whose requests are not yet answered or skipped (unlistenSent): each
	// ends its subscriptions only once its request is answered without
	// an error (unlistensSettled), as one the server skips changes
	// nothing.
	unlistens []sentUnlisten
	// served is the set of channels pgferry's listener serves the
	// client: each one's LISTEN was answered, and no UNLISTEN of it since
	// (serveChannel, unserveChannel). Not guarded by mu: the client's
	// writer owns it (the relay of a linked server, pump or session
	// goroutine, or the session's goroutine with none linked), and reads
	// it without mu (heardAside).
	served []servedChannel
}

// sentListen is a LISTEN of channel sent to the server.
type sentListen struct {
	channel string
	// after is ring.seq when the LISTEN was sent: its request is the
	// first one tagged tagListen that the ring numbers after that (link
	// may push requests of pgferry's own before it), and the next LISTEN
	// noted has an after at least that number (listenSkipped).
	after uint64
	// fresh: the subscription to channel is this LISTEN's to make good
	// (the client was not subscribed before it, or the LISTEN that
	// subscribed it was skipped, or an UNLISTEN answered since ended it).
	fresh bool
	// l is the listener it subscribed through, which serves the channel
	// once it is answered (listenAnswered).
	l *notify.Listener
}

// sentUnlisten is an UNLISTEN of channel (of every channel with all: an
// UNLISTEN * or a DISCARD ALL) sent to the server.
type sentUnlisten struct {
	channel string
	all     bool
	// req is the number of its request in the ring, 0 until process
	// pushes it (stampUnlistens).
	req uint64
}

// listenSent notes a LISTEN of channel about to go to the server, which
// has subscribed the client (fresh: to a channel it was not subscribed to
// before). mu is not held.
func (ss *session) listenSent(channel string, fresh bool) {
	l := ss.entry.listenerMade() // (subscribe made it)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	b := &ss.rare.listen
	if ss.q.n == 0 {
		// Every LISTEN sent before was answered or skipped.
		clear(b.sent)
		b.sent = b.sent[:0]
	}
	if i := slices.Index(b.unheard, channel); i >= 0 {
		// Skipped since subscribe looked: the subscription stands, and
		// is this LISTEN's now.
		b.unheard = slices.Delete(b.unheard, i, i+1)
		fresh = true
	}
	b.sent = append(b.sent, sentListen{channel: channel, after: ss.q.seq, fresh: fresh, l: l})
}

// listensSkipped undoes the LISTENs among the n requests at the head of
// the ring, which the server skips after an error (or failed with it):
// dropSkipped calls it before it drops them. A subscription that only a
// skipped LISTEN made ends, and the notifications it brought are dropped:
// the client, which gets the error alone, hears nothing of a LISTEN that
// never ran, as from PostgreSQL. mu is held.
func (ss *session) listensSkipped(n int) {
	ss.unlistensFailed(n) // (nor do their UNLISTENs end anything)
	if ss.rare == nil || len(ss.rare.listen.sent) == 0 {
		return
	}
	q := &ss.q
	first := q.answered() + 1 // the head's number
	for i := range n {
		if q.buf[(q.head+i)%len(q.buf)].tag == tagListen {
			ss.listenSkipped(first + uint64(i))
		}
	}
}

// listenSkipped undoes the LISTEN whose request, number seq, the server
// skipped. mu is held.
func (ss *session) listenSkipped(seq uint64) {
	b := &ss.rare.listen
	i := len(b.sent) - 1
	for i >= 0 && b.sent[i].after >= seq {
		i--
	}
	if i < 0 {
		return
	}
	sl := b.sent[i]
	b.sent = slices.Delete(b.sent, i, i+1)
	if !sl.fresh {
		return // subscribed before it: that stands
	}
	// What its subscription brought came before the next LISTEN of the
	// channel can run (after the Sync the server skips to).
	ss.dropMail(sl.channel)
	for j := i; j < len(b.sent); j++ {
		if b.sent[j].channel == sl.channel {
			// A LISTEN of the channel sent after it found the
			// subscription made: it is that one's to make good now.
			b.sent[j].fresh = true
			return
		}
	}
	ss.unhear(sl.channel)
}

// unhear adds channel to the subscriptions to end (listenBook.unheard) and
// has the session's goroutine end them soon (reapUnheard): a client
// subscribed to nothing more must not wait until its next LISTEN or its
// end, nor be disconnected as a listener by a reload meanwhile. mu is
// held.
func (ss *session) unhear(channel string) {
	b := &ss.rare.listen
	if !slices.Contains(b.unheard, channel) {
		b.unheard = append(b.unheard, channel)
	}
	// A wake (events.go, without mu here): the session's goroutine,
	// reading the client, comes to onWake, which reaps
	// (deliverNotifications); reading it after the relay ends, at once.
	ss.flags.Or(evWake)
	if ss.loop == 0 && ss.raw != nil {
		ss.raw.SetReadDeadline(pastDeadline)
	}
}

// listenAnswered switches on the channel of the LISTEN whose request,
// number seq, the server has just answered, for the relay handing its
// answer to the client (the client's writer). mu is held.
func (ss *session) listenAnswered(seq uint64) {
	if ss.rare == nil {
		return
	}
	b := &ss.rare.listen
	i := len(b.sent) - 1
	for i >= 0 && b.sent[i].after >= seq {
		i--
	}
	if i < 0 {
		return
	}
	sl := b.sent[i]
	b.sent = slices.Delete(b.sent, i, i+1)
	ss.serveChannel(sl.channel, sl.l)
}

// tagAbortedListen is what a LISTEN sent in a simple Query gets in place
// of CommandComplete LISTEN when its query ran in a failed transaction:
// the error PostgreSQL gives every statement there but COMMIT and
// ROLLBACK (postgres.c, exec_simple_query; SQLSTATE 25P02
// in_failed_sql_transaction).
var tagAbortedListen = protocol.NewError(protocol.SQLStateInFailedSQLTransaction,
	"current transaction is aborted, commands ignored until end of transaction block").AppendFrame(nil)

// listenQueryAnswered answers a LISTEN sent in a simple Query with a
// server linked (listenLinked), the request at the head of the ring, at
// its ReadyForQuery of transaction status status: the server ran its
// empty query, whose EmptyQueryResponse relayServer held back. Sent
// behind other requests, it may have found the transaction failed by
// one of them; the server runs an empty query there as anywhere, but
// PostgreSQL refuses a LISTEN, and so does pgferry then: the client gets
// the error, and the LISTEN subscribes nothing (listenSkipped). Otherwise
// the client gets CommandComplete LISTEN, and the channel is served.
// The caller appends the ReadyForQuery. mu is held.
func (ss *session) listenQueryAnswered(status byte) {
	seq := ss.q.answered() + 1
	if status == protocol.TxFailed {
		ss.wr.Append(tagAbortedListen)
		if ss.rare != nil && len(ss.rare.listen.sent) > 0 {
			ss.listenSkipped(seq)
		}
		return
	}
	ss.wr.Append(execTagFrames[tagListen])
	ss.listenAnswered(seq)
}

// unlistenSent notes an UNLISTEN of channel (all: of every channel, or a
// DISCARD ALL) about to go to the server: its subscriptions end when its
// request is answered, not skipped (unlistensSettled). The session's
// goroutine calls it as it records the statement (applyState); mu is not
// held.
func (ss *session) unlistenSent(channel string, all bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	r := ss.ensureRareLocked()
	r.listen.unlistens = append(r.listen.unlistens, sentUnlisten{channel: channel, all: all})
}

// stampUnlistens gives the UNLISTENs just noted the number of the request
// that carries them, which process has just put in the ring. mu is held.
func (ss *session) stampUnlistens() {
	u := ss.rare.listen.unlistens
	for i := len(u) - 1; i >= 0 && u[i].req == 0; i-- {
		u[i].req = ss.q.seq
	}
}

// unlistensSettled ends the subscriptions of the UNLISTENs whose requests
// were answered (popped): those the server skipped or failed were
// forgotten by then (unlistensFailed). relayServer calls it as it pops a
// request, so that an UNLISTEN takes effect as its answer goes to the
// client, in order with the LISTENs around it. mu is held.
func (ss *session) unlistensSettled() {
	b := &ss.rare.listen
	done := ss.q.answered()
	for len(b.unlistens) > 0 {
		u := b.unlistens[0]
		if u.req == 0 || u.req > done {
			return
		}
		b.unlistens = slices.Delete(b.unlistens, 0, 1)
		if u.all {
			for len(b.served) > 0 {
				ss.unlistenRan(b.served[len(b.served)-1].channel, u.req)
			}
		} else {
			ss.unlistenRan(u.channel, u.req)
		}
	}
}

// unlistensFailed forgets the UNLISTENs of the n requests at the head of
// the ring, which the server skips after an error or failed with one (a
// simple Query's UNLISTEN that an error in its query undid with the rest
// of its implicit transaction): PostgreSQL keeps the client listening, and
// so does pgferry. mu is held.
func (ss *session) unlistensFailed(n int) {
	if ss.rare == nil || len(ss.rare.listen.unlistens) == 0 {
		return
	}
	first := ss.q.answered() + 1
	last := first + uint64(n) - 1
	ss.rare.listen.unlistens = slices.DeleteFunc(ss.rare.listen.unlistens, func(u sentUnlisten) bool {
		return u.req >= first && u.req <= last
	})
}

// unlistenRan ends the client's subscription to channel, which an
// UNLISTEN, request number req, ended: the channel is no longer served,
// the notifications waiting on it are dropped (PostgreSQL delivers none
// after its UNLISTEN) and the subscription ends (unhear), unless a LISTEN
// of the channel sent after the UNLISTEN is on its way: that one keeps it.
// mu is held.
func (ss *session) unlistenRan(channel string, req uint64) {
	if !ss.unserveChannel(channel, false) {
		return // not subscribed, or only by a LISTEN sent since
	}
	b := &ss.rare.listen
	for j := range b.sent {
		if b.sent[j].channel == channel && b.sent[j].after >= req {
			b.sent[j].fresh = true // its to make good now
			return
		}
	}
	ss.dropMail(channel)
	ss.unhear(channel)
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
	box := ss.rare.mailbox
	kept := box[:0]
	for len(box) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(box[1:5]))
		if n < 5 || n > len(box) {
			break // (Notify queues whole frames only)
		}
		if ch, ok := notificationChannel(box[:n]); !ok || string(ch) != channel {
			kept = append(kept, box[:n]...) // (copies forward within box)
		}
		box = box[n:]
	}
	ss.rare.mailbox = kept
}
