package router

import (
	"strings"
	"unique"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/classify"
)

// A SET or RESET of a tracked parameter the server does not report is
// recorded when its request (Query, Execute) is sent, with the request's
// number in the expectation ring and its place among the statements of
// a query of several, and counts only by its transaction's outcome
// (settle): a COMMIT keeps the changes before it, a ROLLBACK undoes them,
// and ReadyForQuery 'I' settles every request answered so far. Savepoint
// statements sent while such a change waits are recorded among them, in
// order, and act when the server runs them: ROLLBACK TO SAVEPOINT undoes
// the changes after its savepoint, and rescues those before it from an
// error that came after it (failParams).

// applyChange records one SET or RESET of a request about to be sent: its
// entry in tentative waits for the request's number (stampTentative) and
// its transaction's outcome (settle). A savepoint statement is recorded
// among them only when one waits before it: with none, it decides nothing
// (a ROLLBACK TO a savepoint pgferry did not record undoes every change
// before it, all made after the savepoint: savepointRollback). mu is held.
func (ss *session) applyChange(ch *classify.Change) {
	r := ss.ensureRareLocked()
	if ch.Savepoint != 0 {
		if len(r.tentative) > 0 {
			r.tentative = append(r.tentative, paramChange{key: ch.SavepointName, op: ch.Savepoint, stmt: ch.Stmt})
		}
		return
	}
	if ch.ResetAll {
		// Reported parameters come back in ParameterStatus; forget the
		// rest once the request has run well.
		for _, pk := range ss.paramKeys {
			if _, rep := ss.entry.welcome[pk]; !rep {
				r.tentative = append(r.tentative, paramChange{key: pk, stmt: ch.Stmt})
			}
		}
		if def, ok := ss.entry.welcome[scsName]; ok {
			r.tentative = append(r.tentative, paramChange{key: scsName, value: def, op: opSCS, stmt: ch.Stmt})
		}
		return
	}
	if ch.SetName == "" {
		return
	}
	k := canonicalParam(ss, ch.SetName)
	if !ss.tracks(k) {
		return // a SET pins (changePin); a RESET leaves nothing pgferry carries
	}
	if _, reported := ss.entry.welcome[k]; reported {
		// The server reports the new value (and the old one again on
		// rollback) in ParameterStatus: nothing to record here, but for
		// standard_conforming_strings, which the values of the SETs
		// after it read by before it is reported (see scsAt).
		if k == scsName {
			v := ss.entry.welcome[k]
			if !ch.Reset && !strings.EqualFold(ch.SetValue, "default") {
				v = ch.SetValue
			}
			r.tentative = append(r.tentative, paramChange{key: k, value: v, op: opSCS, stmt: ch.Stmt})
		}
		return
	}
	// Recorded as SQL text, applied if the request runs well.
	pc := paramChange{key: k, stmt: ch.Stmt}
	if !ch.Reset {
		sv, ok := ss.setValue(ch.SetValue)
		if !ok {
			return // pinned for (changePin)
		}
		pc.value = rawValuePrefix + sv
		if ss.scsPending() {
			// standard_conforming_strings may read otherwise when it
			// runs: the other reading waits for its CommandComplete
			// (scsAt).
			on := !ss.standardStrings()
			if ov, ok := classify.PortableValue(ch.SetValue, on); ok && ov != sv {
				pc.alt, pc.altOn = rawValuePrefix+ov, on
			}
		}
	}
	r.tentative = append(r.tentative, pc)
}

// paramChange is a client's SET (value) or RESET (empty value) of a
// parameter the server does not report, waiting for the outcome of its
// transaction; or, op set, a savepoint statement (classify.Savepoint*)
// of the savepoint named key. seq is the number of the request that
// carries it in the expectation ring (ring.seq), 0 until the request is
// sent (stampTentative), and stmt its place among the request's
// statements (classify.Change.Stmt): together its position, in the order
// the server runs them. aborted marks a change that ran in a transaction
// an error then aborted (failParams): it is undone unless a ROLLBACK TO a
// savepoint before it rescues it.
type paramChange struct {
	key, value string
	seq        uint64
	stmt       int
	op         uint8
	aborted    bool
	// alt is the value of a SET read under the other setting of
	// standard_conforming_strings than the one value was read under,
	// on if altOn, where a change of that setting may run before it:
	// scsAt picks one when the SET runs.
	alt   string
	altOn bool
	// query marks a change a simple Query carries: PostgreSQL reads the
	// whole of it before it runs any of it, under the setting in effect
	// when it began.
	query bool
}

// before reports whether ch runs before the statement at position (seq,
// stmt).
func (ch *paramChange) before(seq uint64, stmt int) bool {
	return ch.seq < seq || (ch.seq == seq && ch.stmt < stmt)
}

// paramUnknown stands in sc.Params for a parameter whose value on the
// server pgferry does not know: whoever gets the server next sets (or
// resets) it. It cannot occur in a GUC value.
const paramUnknown = "\x00unknown"

// pendingParams reports whether parameter changes of the client wait for
// their requests' outcome. mu is held.
func (ss *session) pendingParams() bool { return ss.rare != nil && len(ss.rare.tentative) > 0 }

// stampTentative gives the changes applyState just recorded the number of
// the request that carries them, which process has just put in the ring.
// mu is held.
func (ss *session) stampTentative() {
	if ss.rare == nil {
		return
	}
	t := ss.rare.tentative
	query := ss.q.n > 0 && ss.q.buf[(ss.q.head+ss.q.n-1)%len(ss.q.buf)].kind == kQuery
	for i := len(t) - 1; i >= 0 && t[i].seq == 0; i-- {
		t[i].seq, t[i].query = ss.q.seq, query
	}
	if ss.listening && len(t) > 0 {
		ss.markMail() // (listenlinked.go: a LISTEN may wait for this request's COMMIT)
	}
}

// dropUnsent forgets changes applyState recorded for a request that was
// never sent (refused, or no server could be had for it). mu is held.
func (ss *session) dropUnsent() {
	ss.keepTentative(func(ch *paramChange) bool { return ch.seq != 0 })
}

// dropUnanswered forgets the changes of requests sent on a loan that ended
// before they were answered (the server or the client failed): a new loan
// begins. Their server connection was destroyed. mu is held.
func (ss *session) dropUnanswered() {
	ss.keepTentative(func(ch *paramChange) bool { return ch.seq == 0 })
}

// keepTentative keeps the pending changes keep returns true for, in
// order, and lets go of the others. mu is held.
func (ss *session) keepTentative(keep func(*paramChange) bool) {
	if ss.rare == nil {
		return
	}
	t := ss.rare.tentative
	kept := t[:0]
	for i := range t {
		if keep(&t[i]) {
			kept = append(kept, t[i])
		}
	}
	clear(t[len(kept):])
	ss.rare.tentative = kept
}

// settleParams settles the client's pending parameter changes when a
// transaction ends (ReadyForQuery 'I'): those of the requests answered so
// far are applied unless an error aborted them, as PostgreSQL itself
// keeps or undoes a SET; those of requests still running wait. mu is
// held.
func (ss *session) settleParams(sc *pool.ServerConn) {
	ss.settleAt(sc, ss.q.answered()+1, 0, true, ss.q.answered())
}

// settle applies (keep) or drops the pending changes that run before the
// statement at position (seq, stmt) (see paramChange), and forgets the
// savepoint statements among them: their transaction ended there. A
// change an error aborted is dropped whatever keep says. A dropped change
// leaves the parameter unknown on sc: the server is back at the value it
// had before, which sc.Params holds, but marking it costs the next client
// only a SET, and nothing pgferry misread can then reach it. mu is held.
func (ss *session) settle(sc *pool.ServerConn, seq uint64, stmt int, keep bool) {
	ss.settleAt(sc, seq, stmt, keep, seq)
}

// settleAt is settle, where the transaction ended (committed, if keep) by
// request number end: the statement's own, or the last one answered when
// a ReadyForQuery 'I' ends an implicit transaction (settleParams). mu is
// held.
func (ss *session) settleAt(sc *pool.ServerConn, seq uint64, stmt int, keep bool, end uint64) {
	ss.keepTentative(func(ch *paramChange) bool {
		switch {
		case ch.seq == 0 || !ch.before(seq, stmt):
			return true
		case listenOp(ch.op):
			ss.listenSettled(ch, keep && !ch.aborted, end) // (listenlinked.go)
			return false
		case ch.op != 0:
			return false
		case !keep || ch.aborted:
			sc.Params[ch.key] = paramUnknown
		case ch.value == "":
			ss.params.del(ch.key)
			delete(sc.Params, ch.key)
		default:
			ss.setParam(ch.key, ch.value)
			sc.Params[ch.key] = ch.value
		}
		ss.paramsDirty = true
		sc.ParamsKey = unique.Handle[string]{}
		return false
	})
}

// stmtAnswered returns the position (see paramChange) of the statement
// the server's CommandComplete or ErrorResponse at hand answers, and
// counts it: the request at the head of the ring, and how many of its
// statements were answered before. It is called for every such message
// while changes are pending (pendingParams): they were recorded before
// their request went out, so the count of a request that has any starts
// with its first answer. mu is held.
func (ss *session) stmtAnswered() (seq uint64, stmt int) {
	r := ss.rare
	seq = ss.q.answered() + 1
	if r.stmtSeq != seq {
		r.stmtSeq, r.stmtN = seq, 0
	}
	stmt = r.stmtN
	r.stmtN++
	return seq, stmt
}

// failParams follows an error of the server while changes are pending:
// what the failing statement and the rest of its request were to change
// never runs, and the changes before it ran in the transaction the error
// aborts (changes of a transaction that ended before it are settled by
// then): they are undone when it ends, unless a ROLLBACK TO SAVEPOINT
// rescues them (savepointRollback). Changes of requests sent after the
// failing one are left to their own answers (dropSkipped drops those the
// server skips). mu is held.
func (ss *session) failParams() {
	seq, stmt := ss.stmtAnswered()
	ss.keepTentative(func(ch *paramChange) bool {
		switch {
		case ch.seq == 0 || ch.seq > seq:
		case ch.before(seq, stmt):
			ch.aborted = true
		default:
			return false
		}
		return true
	})
}

// skippedParams drops the pending changes of the n requests at the head
// of the ring, which the server skips after an error: they never run.
// mu is held.
func (ss *session) skippedParams(n int) {
	first, last := ss.q.answered()+1, ss.q.answered()+uint64(n)
	ss.keepTentative(func(ch *paramChange) bool { return ch.seq < first || ch.seq > last })
}
