// LISTEN and UNLISTEN with a server linked: what the session notes of those
// it sends, and how each settles as the server answers, skips or fails it.

package router

import (
	"slices"

	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/notify"
)

// listenLinked serves a LISTEN on channel sent while the client has a
// server linked (inside a transaction, or pinned to it) through the pool's
// listener, as handleListen does between transactions: so each
// subscription has one home, whichever way the client is tied to its
// server, and its UNLISTEN and its notifications work the same. The
// statement itself, sql, is blanked in place: the server runs an empty
// query, whose EmptyQueryResponse the client gets as CommandComplete
// LISTEN (execTag), in order with the server's other answers. The
// listener serves the channel from here, but the subscription counts only
// once its transaction commits, as through the extended protocol (see
// opListen). In a failed transaction it goes to the
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

// A LISTEN that pgferry's listener serves for a client with a server
// linked (the Execute of a LISTEN portal, interceptExecute; a LISTEN in a
// simple Query, listenLinked) subscribes the client as its request goes to
// the server, so that the listener's LISTEN is acknowledged before the
// client's CommandComplete LISTEN, and before the COMMIT that makes it
// count (opListen). But after an error in the extended protocol the
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
	// marks notes, for each request sent while a LISTEN waits for its
	// transaction's outcome (opListen), how many bytes of notifications
	// waited as it went (markMail): those were committed before it
	// reached the server, so before a COMMIT it carries (commitMail).
	// Those of requests answered are let go of as the next is noted.
	marks []mailMark
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
	// Undone if its transaction does not commit (opListen).
	ss.rare.tentative = append(ss.rare.tentative, paramChange{key: channel, op: opListen})
	ss.rare.setsSent = true // (the session's goroutine: its savepoints count now)
}

// listensSkipped undoes the LISTENs among the n requests at the head of
// the ring, which the server skips after an error (or failed with it):
// dropSkipped calls it before it drops them. A subscription that only a
// skipped LISTEN made ends, and the notifications it brought are dropped:
// the client, which gets the error alone, hears nothing of a LISTEN that
// never ran, as from PostgreSQL. (Their UNLISTENs, pending in tentative,
// are dropped with their SETs: skippedParams.) mu is held.
func (ss *session) listensSkipped(n int) {
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

// takeSent takes from sent the LISTEN of request number seq (the last sent
// at or before it), and says where it was.
func (b *listenBook) takeSent(seq uint64) (at int, sl sentListen, ok bool) {
	i := len(b.sent) - 1
	for i >= 0 && b.sent[i].after >= seq {
		i--
	}
	if i < 0 {
		return 0, sentListen{}, false
	}
	sl = b.sent[i]
	b.sent = slices.Delete(b.sent, i, i+1)
	return i, sl, true
}

// listenSkipped undoes the LISTEN whose request, number seq, the server
// skipped. mu is held.
func (ss *session) listenSkipped(seq uint64) {
	b := &ss.rare.listen
	i, sl, ok := b.takeSent(seq)
	if !ok {
		return
	}
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
// answer to the client (the client's writer); the subscription still
// waits for its transaction to commit (opListen). mu is held.
func (ss *session) listenAnswered(seq uint64) {
	if ss.rare == nil {
		return
	}
	if _, sl, ok := ss.rare.listen.takeSent(seq); ok {
		ss.serveChannel(sl.channel, sl.l, seq)
		if !sl.fresh {
			// Subscribed before it: its transaction's outcome changes
			// nothing.
			ss.forgetListen(seq)
		}
	}
}

// inFailedTransaction is what a LISTEN or a DEALLOCATE sent in a simple
// Query as an empty one (listenLinked, deallocQuery) gets in place of its
// CommandComplete when its query ran in a failed transaction:
// the error PostgreSQL gives every statement there but COMMIT and
// ROLLBACK (postgres.c, exec_simple_query; SQLSTATE 25P02
// in_failed_sql_transaction).
var inFailedTransaction = protocol.NewError(protocol.SQLStateInFailedSQLTransaction,
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
		ss.wr.Append(inFailedTransaction)
		if ss.rare != nil && len(ss.rare.listen.sent) > 0 {
			ss.listenSkipped(seq)
			ss.forgetListen(seq)
		}
		return
	}
	ss.wr.Append(execTagFrames[tagListen])
	ss.listenAnswered(seq)
}

// A LISTEN or UNLISTEN takes effect when its transaction commits
// (PostgreSQL's LISTEN reference page; async.c, PreCommit_Notify,
// AtCommit_Notify): inside BEGIN ... COMMIT at the COMMIT, otherwise as
// its implicit transaction ends, at the ReadyForQuery of its simple Query
// or of the Sync after its portal; a ROLLBACK, a ROLLBACK TO a savepoint
// before it, or an error that aborts its transaction undoes it. So each
// one sent with a server linked waits in the client's pending changes
// (rareState.tentative) with the SETs, whose settling follows exactly
// those outcomes (statesettle.go, statesavepoint.go), marked by its op:
// a LISTEN (listenSent), whose subscription the listener serves from its
// answer on (the listener's LISTEN was acknowledged before the statement
// went, so none committed after the COMMIT is lost), and which is undone
// if its transaction does not commit (listenUndone); and an UNLISTEN, of
// key or of every channel (unlistenSent), which ends its subscriptions
// only once its transaction commits (unlistenRan). A LISTEN that did not
// subscribe the client (it was subscribed before) leaves its entry at its
// answer: its outcome changes nothing (forgetListen).
const (
	opListen uint8 = 0x40 + iota
	opUnlisten
	opUnlistenAll
)

// listenOp reports whether op marks a LISTEN or an UNLISTEN in tentative.
func listenOp(op uint8) bool { return op >= opListen && op <= opUnlistenAll }

// unlistenSent notes an UNLISTEN of channel (all: of every channel, or a
// DISCARD ALL), statement stmt of a request about to go to the server:
// its subscriptions end when its transaction commits (listenSettled).
// applyState calls it as it records the statement; mu is held.
func (ss *session) unlistenSent(channel string, all bool, stmt int) {
	r := ss.ensureRareLocked()
	op := opUnlisten
	if all {
		op = opUnlistenAll
	}
	r.tentative = append(r.tentative, paramChange{key: channel, op: op, stmt: stmt})
}

// forgetListen drops the pending entry of the LISTEN of request number
// seq: its outcome changes nothing (it did not subscribe the client, or
// it was undone as the server skipped or refused it). mu is held.
func (ss *session) forgetListen(seq uint64) {
	ss.keepTentative(func(ch *paramChange) bool { return ch.op != opListen || ch.seq != seq })
}

// listenSettled settles a pending LISTEN or UNLISTEN whose transaction
// ended: committed (by request number end), it takes effect (an UNLISTEN
// ends its subscriptions; a LISTEN drops the notifications committed
// before its COMMIT, commitMail), otherwise it is undone (a LISTEN's
// subscription ends). settle and savepointStatement call it, relaying the
// server's answers. mu is held.
func (ss *session) listenSettled(ch *paramChange, committed bool, end uint64) {
	switch {
	case ch.op == opListen && committed:
		ss.commitMail(ch.key, end)
	case ch.op == opListen:
		ss.listenUndone(ch.key)
	case ch.op == opUnlisten && committed:
		ss.unlistenRan(ch.key, ch.seq)
	case ch.op == opUnlistenAll && committed:
		b := &ss.rare.listen
		for i := len(b.served) - 1; i >= 0; i-- {
			ss.unlistenRan(b.served[i].channel, ch.seq) // (removes the one at i, or none)
		}
	}
}

// listenUndone undoes the LISTEN of channel, answered, that subscribed
// the client (it was not before): its transaction rolled back. The
// channel is no longer served, the notifications it brought are dropped,
// and the subscription ends (unhear), unless a LISTEN of the channel sent
// since is on its way: that one found the subscription made, and it is
// its to make good now. mu is held.
func (ss *session) listenUndone(channel string) {
	b := &ss.rare.listen
	ss.unserveChannel(channel, false)
	ss.dropMail(channel)
	for j := range b.sent {
		if b.sent[j].channel == channel {
			b.sent[j].fresh = true
			return
		}
	}
	ss.unhear(channel)
}

// listensLost undoes the pending LISTENs and forgets the pending UNLISTENs
// of a transaction whose server was lost: it rolled back. The caller,
// which pops the requests owed, undid their LISTENs first (listensSkipped).
// mu is held.
func (ss *session) listensLost() {
	if !ss.pendingParams() {
		return
	}
	answered := ss.q.answered()
	ss.keepTentative(func(ch *paramChange) bool {
		if !listenOp(ch.op) || ch.seq == 0 {
			return true
		}
		if ch.seq <= answered {
			ss.listenSettled(ch, false, 0) // (those owed: listensSkipped)
		}
		return false
	})
}

// unlistenRan ends the client's subscription to channel, which an
// UNLISTEN, request number req, ended: the channel is no longer served,
// the notifications waiting on it are dropped (PostgreSQL delivers none
// after its UNLISTEN) and the subscription ends (unhear), unless a LISTEN
// of the channel sent after the UNLISTEN was answered (servedChannel.since)
// or is on its way: that one keeps it. mu is held.
func (ss *session) unlistenRan(channel string, req uint64) {
	b := &ss.rare.listen
	i := slices.IndexFunc(b.served, func(s servedChannel) bool { return s.channel == channel })
	if i < 0 || b.served[i].since > req {
		return // not subscribed, or again by a LISTEN sent since
	}
	ss.unserveChannel(channel, false)
	for j := range b.sent {
		if b.sent[j].channel == channel && b.sent[j].after >= req {
			b.sent[j].fresh = true // its to make good now
			return
		}
	}
	ss.dropMail(channel)
	ss.unhear(channel)
}

// mailMark is the length of the mailbox (rareState.mailbox) as request
// number seq went to the server.
type mailMark struct {
	seq uint64
	at  int
}

// markMail notes how many bytes of notifications wait as the request just
// put in the ring goes to the server, if a LISTEN waits for its
// transaction's outcome: should that request commit it, the notifications
// on its channel among them were committed before, and PostgreSQL would
// not deliver them (commitMail). stampTentative calls it. mu is held.
func (ss *session) markMail() {
	r := ss.rare
	if !slices.ContainsFunc(r.tentative, func(ch paramChange) bool { return ch.op == opListen }) {
		clear(r.listen.marks)
		r.listen.marks = r.listen.marks[:0]
		return
	}
	done := ss.q.answered()
	r.listen.marks = slices.DeleteFunc(r.listen.marks, func(m mailMark) bool { return m.seq <= done })
	r.listen.marks = append(r.listen.marks, mailMark{seq: ss.q.seq, at: len(r.mailbox)})
}

// commitMail follows the commit, by request number end, of a LISTEN of
// channel that subscribed the client: the notifications on channel that
// waited as end went to the server were committed before the LISTEN's
// transaction, and are dropped, as PostgreSQL delivers to a session only
// those committed after its LISTEN's transaction (async.c,
// Exec_ListenPreCommit). Those that came after it went may have been
// committed after it, and are kept: none so committed is lost. mu is held.
func (ss *session) commitMail(channel string, end uint64) {
	marks := ss.rare.listen.marks
	i := len(marks) - 1
	for i >= 0 && marks[i].seq > end {
		i--
	}
	if i >= 0 {
		ss.dropMailBefore(channel, marks[i].at)
	}
}

// listenInTransaction reports whether the client's open transaction ran a
// LISTEN that pgferry's listener serves (the server ran an empty query or
// listenStandIn in its place), or an UNLISTEN once the client has
// listened (PostgreSQL queues an UNLISTEN only in a session that has):
// PostgreSQL refuses to PREPARE TRANSACTION such a transaction (async.c,
// AtPrepare_Notify), and the server, which never ran them, would not. It
// looks only where nothing is owed and the transaction has not failed (a
// PREPARE TRANSACTION there is a ROLLBACK). mu is not held.
func (ss *session) listenInTransaction() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.rare == nil || ss.server == nil || ss.q.n != 0 || ss.status != protocol.TxInTx {
		return false
	}
	for _, ch := range ss.rare.tentative {
		if ch.op == opListen || (listenOp(ch.op) && ss.listening) {
			return true
		}
	}
	return false
}

// prepareRefused sends the client's PREPARE TRANSACTION, sql, as ROLLBACK
// (blanked in place, as listenLinked blanks a LISTEN): the transaction
// ends as PostgreSQL ends one it refuses to prepare, its LISTENs undone
// (onCommandComplete), and the client gets PostgreSQL's error in place of
// the CommandComplete (tagPrepareRefused), then ReadyForQuery 'I'.
func (ss *session) prepareRefused(sql []byte) {
	n := copy(sql, "ROLLBACK")
	for i := n; i < len(sql); i++ {
		sql[i] = ' '
	}
	ss.execTag = tagPrepareRefused
}
