// Close of one of the client's named protocol-level statements: pgferry
// answers it itself, in order, and the server keeps its copy under
// pgferry's name; the client's name goes as PostgreSQL's would.

package router

import "github.com/pgferry/pgferry/protocol"

// closeLocally handles Close of a named statement: the client forgets it,
// the server keeps its copy in its LRU. The CloseComplete must arrive in
// order, so with a server linked a Close of a throwaway name goes to the
// server in its place, and the client's name goes as the server runs it:
// set aside as it goes, for good at its CloseComplete, back if the server
// skips it after an error earlier in its pipeline or is lost first
// (closeSent), as PostgreSQL skips a Close up to the Sync (postgres.c,
// ignore_till_sync). With no server linked nothing skips it: the name
// goes at once and pgferry answers; unless the session skips to its
// client's Sync (stSkipToSync: its server was lost since handleFrame
// looked), where the Close is skipped and the name stays. It reports
// whether the frame was fully handled.
func (ss *session) closeLocally(frame []byte) bool {
	body := protocol.Body(frame)
	if len(body) < 2 || body[0] != 'S' || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		return false
	}
	name, _, ok := protocol.CString(body[1:])
	if !ok || len(name) == 0 {
		return false
	}
	ss.faultAt("local")
	ss.mu.Lock()
	sc := ss.server
	for sc != nil && ss.replays != 0 && ss.loop == 0 && ss.awaitsReplay(protocol.MsgClose) {
		// (paramsrefused.go: a request after the loan's first waits for
		// the replay's answer, as send has it wait; the relay loop hands
		// such a request to the goroutine before it comes here.)
		ss.mu.Unlock()
		ss.awaitReplay(sc)
		ss.mu.Lock()
		sc = ss.server
	}
	if sc == nil && ss.has(stSkipToSync) {
		ss.mu.Unlock()
		return true // (its server lost since handleFrame looked: skipped)
	}
	if sc == nil {
		ss.forgetStmt(name) // (under mu: a failed drop's answer puts names back, dropUndone)
		ss.mu.Unlock()
		ss.forgetStmtClass(string(name)) // (gone for sure: nothing to skip it)
		ss.joinPump()
		ss.wr.SetBuffer(protocol.AppendEmpty(ss.wr.Buffer(), protocol.MsgCloseComplete))
		ss.flushClientIfIdle()
		return true
	}
	ss.wmu.Lock()
	ss.ownerHeld = heldMu | heldWmu // (as in send: for a panic's recover)
	ss.faultAt("process")
	if ss.replays != 0 && !ss.q.open {
		ss.guardReplay(sc) // (as process: the server has not answered the replay yet, paramsrefused.go)
	}
	ss.q.open = true // (as process: an extended-protocol request went out)
	ss.q.push(expect{kind: kClose})
	sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
	ss.closeSent(name)
	ss.ownerHeld = heldWmu
	ss.mu.Unlock()
	ss.flushServerIfIdle(sc)
	ss.ownerHeld = 0
	ss.wmu.Unlock()
	ss.relayInline(sc) // (as handleFrame's send: answers owed by what went before it)
	return true
}

// closeSent sets aside the client's statement name as its Close (request
// number ss.q.seq, the throwaway Close closeLocally sent in its place)
// goes: a pendingDrop of that name alone, as for a DEALLOCATE of it,
// settled by the Close's answer: its CloseComplete, the server ran it
// (closeAnswered, dropRan), or the server skipped it after an error or
// was lost first (dropSkipped, dropsLost: dropUndone). A name that an
// earlier drop still unanswered set aside gets a drop with nothing in it
// yet, which takes the name should that drop be undone (laterDrop); a
// name the client holds nowhere, none. mu is held.
func (ss *session) closeSent(name []byte) {
	t := ss.stmts
	if t == nil {
		return
	}
	st := t.named[string(name)]
	if st == nil && !t.setAside(name) {
		return
	}
	d := pendingDrop{seq: ss.q.seq, one: string(name)}
	if st != nil {
		delete(t.named, d.one)
		ss.countStmts()
		d.named = map[string]*clientStmt{d.one: st}
	}
	t.drops = append(t.drops, d)
}

// setAside reports whether one of t's unanswered drops set the client's
// statement name aside.
func (t *clientStmts) setAside(name []byte) bool {
	for i := range t.drops {
		if t.drops[i].named[string(name)] != nil {
			return true
		}
	}
	return false
}

// closeAnswered settles the Close of request seq, just answered with
// CloseComplete, if closeSent set a name aside for it, or the Parse of
// request seq, answered with ParseComplete (parseSent): the server ran it
// (dropRan). mu is held.
func (ss *session) closeAnswered(seq uint64) {
	if t := ss.stmts; t != nil && len(t.drops) > 0 {
		ss.dropRan(seq)
	}
}
