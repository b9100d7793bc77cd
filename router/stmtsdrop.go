// The drops of every prepared statement a client sends (DEALLOCATE ALL,
// DISCARD ALL, by a simple Query or an Execute): the client's names and the
// server's cache set aside while a drop is unanswered (dropSent), taken
// back or let go by its answer (dropRan, dropUndone), and the table tidied
// after (tidyStmts). See stmts.go for the table itself.

package router

import (
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/prepared"
)

// dropSent sets aside the client's statement names and sc's statement
// cache when the Query or Execute just appended for it drops every
// prepared statement of the server (clientStmts.dropping), so that the
// messages a pipeline sends behind it prepare their statements again
// rather than bind ones the server will no longer have by then: a
// pendingDrop, until its answer says whether the server ran it (dropRan)
// or not (dropUndone). The drop's CommandComplete, which comes after the
// server prepared those, leaves the cache alone (tagDrop). mu is held.
func (ss *session) dropSent(sc *pool.ServerConn) {
	t := ss.stmts
	if t == nil || (!t.dropping && t.dealloc == "") {
		return
	}
	if t.dealloc != "" {
		ss.deallocSent(t) // (stmtsdealloc.go: a DEALLOCATE of one name)
		if !t.dropping {
			return
		}
	}
	if len(t.named) > 0 || sc.Stmts.Len() > 0 || len(t.drops) > 0 {
		// (One with nothing to set aside still takes what a drop before
		// it gives back should that one not run: laterDrop.)
		t.drops = append(t.drops, pendingDrop{seq: ss.q.seq, named: t.named, keys: sc.Stmts.Drain(nil)})
		t.named = nil
		ss.countStmts()
	}
	ss.unmarkDrop(t)
}

// dropRan settles the drop whose request is at the head of the ring (seq,
// the next one answered), if it is one dropSent set aside: its
// CommandComplete came, the server ran it, and the names it dropped are
// gone for good. mu is held.
func (ss *session) dropRan(seq uint64) {
	t := ss.stmts
	if t == nil || len(t.drops) == 0 || t.drops[0].seq != seq {
		return
	}
	ss.releaseNamed(t.drops[0].named)
	t.popDrop(0)
}

// dropUndone settles the drop of request seq, if dropSent set one aside,
// as one the server did not run: it answered an error before the drop ran
// (in an aborted transaction, an earlier statement of its query), skipped
// it after an error of its pipeline (dropSkipped), or was lost first
// (lostServer; sc nil). What it set aside comes back: the client's names,
// but for those it has prepared again since, and sc's cached statements,
// but for those prepared or closed again since (pendingDrop.keys). A
// later drop still unanswered that drops them takes them instead (one of
// every statement takes all, one of a name that name: laterDrop): they
// were the client's and the server's when it went. mu is held.
func (ss *session) dropUndone(sc *pool.ServerConn, seq uint64) {
	t := ss.stmts
	if t == nil {
		return
	}
	i := 0
	for i < len(t.drops) && t.drops[i].seq != seq {
		i++
	}
	if i == len(t.drops) {
		return
	}
	d := t.drops[i]
	t.popDrop(i) // (t.drops[i:] went after it)
	if ss.stopping {
		ss.releaseNamed(d.named) // (the session ended: releaseStmts)
		return
	}
	if d.parsed != nil {
		t.unparse(i, d.one, d.parsed, ss.srv.stmts.Release)
	}
	if j := t.laterDrop(i, ""); j >= 0 {
		later := &t.drops[j]
		for _, k := range d.keys {
			if k != 0 {
				later.keys = append(later.keys, k) // (used less recently than its own)
			}
		}
	} else if sc != nil {
		for _, k := range d.keys {
			if k != 0 {
				sc.Stmts.Restore(k)
			}
		}
	}
	for name, st := range d.named {
		named := &t.named
		if j := t.laterDrop(i, name); j >= 0 {
			named = &t.drops[j].named
		}
		if (*named)[name] != nil {
			ss.srv.stmts.Release(st.Statement) // (prepared again since)
			continue
		}
		if *named == nil {
			*named = make(map[string]*clientStmt, len(d.named))
		}
		(*named)[name] = st
	}
	ss.countStmts()
}

// unparse takes back what a Parse of name that did not run made the name
// stand for (parsed: parseSent), from the client's names or from those
// that t's unanswered drops from the i-th on set aside since (a Close, a
// drop of every statement), and gives its identity back (release), so
// that the name is free for what it stood for before (dropUndone).
func (t *clientStmts) unparse(i int, name string, parsed *clientStmt, release func(*prepared.Statement)) {
	if t.named[name] == parsed {
		delete(t.named, name)
		release(parsed.Statement)
		return
	}
	for j := i; j < len(t.drops); j++ {
		if t.drops[j].named[name] == parsed {
			delete(t.drops[j].named, name)
			release(parsed.Statement)
			return
		}
	}
}

// laterDrop returns the index of the first of t's unanswered drops from
// the i-th on that drops the client's statement name: one of every
// statement, or of that name alone; for name "", the first of every
// statement. -1: none does.
func (t *clientStmts) laterDrop(i int, name string) int {
	for j := i; j < len(t.drops); j++ {
		if one := t.drops[j].one; one == "" || one == name {
			return j
		}
	}
	return -1
}

// dropsLost settles every drop still unanswered as one the server did not
// run (dropUndone), the latest first: its server is lost, and the client
// told so. mu is held.
func (ss *session) dropsLost() {
	if t := ss.stmts; t != nil {
		for n := len(t.drops); n > 0; n = len(t.drops) {
			ss.dropUndone(nil, t.drops[n-1].seq)
		}
	}
}

// dropsUnseen forgets the server's statements the drops still unanswered
// set aside, when a drop pgferry did not see go answers first: the server
// may no longer have them. mu is held.
func (ss *session) dropsUnseen() {
	if t := ss.stmts; t != nil {
		for i := range t.drops {
			t.drops[i].keys = t.drops[i].keys[:0]
		}
	}
}

// popDrop removes t's i-th unanswered drop.
func (t *clientStmts) popDrop(i int) {
	copy(t.drops[i:], t.drops[i+1:])
	t.drops[len(t.drops)-1] = pendingDrop{}
	t.drops = t.drops[:len(t.drops)-1]
	t.dropSettled() // (stmtswait.go)
}

// dropNotSent forgets the mark of a drop whose request is refused (refuse):
// none of it runs, so the client keeps its statement names, and the next
// server the client's requests go to keeps its statements.
func (ss *session) dropNotSent() {
	if t := ss.stmts; t != nil && (t.dropping || t.dealloc != "") {
		ss.mu.Lock() // (unmarkDrop may let go of ss.stmts: dropUndone reads it)
		t.dealloc = ""
		ss.unmarkDrop(t)
		ss.mu.Unlock()
	}
}

// unmarkDrop clears t's drop mark, and lets go of t if it was made for the
// mark alone: an idle client keeps none. (One that holds a drop unanswered
// is let go at the next loan: attach, tidyStmts.) mu is held.
func (ss *session) unmarkDrop(t *clientStmts) {
	t.dropping = false
	ss.tidyStmts()
}

// tidyStmts lets go of the client's table if it holds nothing: no names,
// no unnamed statement, no drop marked or unanswered. mu is held, or no
// server is linked.
func (ss *session) tidyStmts() {
	if t := ss.stmts; t != nil && len(t.dups) > 0 {
		t.dups = answeredDups(t.dups, ss.q.answered())
	}
	if t := ss.stmts; t != nil && len(t.dups) == 0 && len(t.named) == 0 && !t.hasUnnamed && cap(t.unnamed) == 0 && !t.dropping && t.dealloc == "" && len(t.drops) == 0 {
		ss.stmts = nil
	}
}
