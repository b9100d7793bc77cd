// SQL DEALLOCATE of one of the client's protocol-level statements: on
// PostgreSQL, SQL and protocol-level statements share one namespace, and
// DEALLOCATE name drops a statement the client prepared with Parse
// (psycopg 3 on libpq before 17 evicts its cache so). The server has the
// statement under pgferry's name, so the request is served as a Close of
// it (closeLocally), answered as PostgreSQL answers DEALLOCATE.

package router

import (
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// How a DEALLOCATE of the client's statement name (classify's
// Deallocate) is served, whatever the protocol: the client's name goes
// as its request goes (deallocSent), set aside as a drop of every
// statement sets aside what it drops (pendingDrop, with the one name and
// none of the server's statements: the server keeps its copy, as after a
// Close), for good once the server ran the request (dropRan), back if it
// did not (dropUndone): refused in a failed transaction (25P02), skipped
// after an error of its pipeline, or its server lost. PostgreSQL does not
// undo a DEALLOCATE at ROLLBACK either (prepared statements are not
// transactional). A name the client does not hold when its request goes
// reaches the server as written, which answers for it (26000, or drops
// its own SQL-level statement in a pinned session).
//
//   - A simple Query that is that one statement, with no server linked (no
//     transaction, nothing owed), is answered at once: CommandComplete
//     DEALLOCATE and ReadyForQuery I (deallocQuery).
//   - With a server linked, its text is blanked: the server runs an empty
//     query, whose EmptyQueryResponse relayServer holds back, and at its
//     ReadyForQuery the client gets CommandComplete DEALLOCATE, or, in a
//     failed transaction (perhaps failed by a request still owed when it
//     went), the 25P02 error PostgreSQL gives there (deallocAnswered).
//   - Through the extended protocol the statement DEALLOCATE name is
//     parsed and bound on the server as the client sent it, and decides at
//     its Execute, as PostgreSQL does: the Execute of a portal bound to it
//     (interceptExecute) goes behind a Close and a Parse of a statement of
//     that name on the server, their answers swallowed (deallocPrepare),
//     so the server's own DEALLOCATE runs and drops that stand-in, and
//     answers as PostgreSQL answers, CommandComplete DEALLOCATE or an
//     error, 25P02 too (the Parse of "SELECT" is refused in a failed
//     transaction, the error reaching the client as its Execute's). An
//     Execute that fails after its stand-in's Parse ran (its portal gone
//     with the transaction that bound it, or run already; a cancel) leaves
//     the stand-in on the server, where a client's Bind or DEALLOCATE of
//     a name it does not hold would find it: the server then goes back to
//     no other client (ring.doubt: releaseServer, finish destroy it). A
//     client tied to its server (pinned, session mode) keeps it
//     meanwhile, until its next DEALLOCATE of that name closes it first,
//     or its session ends, which closes the server too.
//
// A DEALLOCATE in a query of several statements is not served: it reaches
// the server as written (docs/transaction-mode.md).

// standInBody is the Parse body after the name of deallocPrepare's
// stand-in statement: "SELECT" with no parameter types. An empty query
// would do but for a failed transaction, where PostgreSQL parses one and
// refuses "SELECT" with 25P02, as it refuses DEALLOCATE.
var standInBody = []byte("SELECT\x00\x00\x00")

// deallocQuery serves a simple Query that is one DEALLOCATE of name (see
// above), sql its text, if the client holds a statement of that name.
// done reports that it answered the query itself. A session that skips to
// its client's Sync (stSkipToSync: its server was lost since handleFrame
// looked) skips the query, as PostgreSQL would, and the client keeps its
// statement: the query is left to handleFrame, which skips it (link).
func (ss *session) deallocQuery(name string, sql []byte) (done bool, err error) {
	if ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		return false, nil
	}
	ss.faultAt("local")
	ss.mu.Lock()
	if t := ss.stmts; t == nil || t.named[name] == nil || (ss.server == nil && ss.has(stSkipToSync)) {
		ss.mu.Unlock()
		return false, nil
	}
	if ss.server == nil {
		ss.forgetStmt([]byte(name))
		ss.mu.Unlock()
		ss.forgetStmtClass(name)
		ss.joinPump()
		b := protocol.AppendCommandComplete(ss.wr.Buffer(), "DEALLOCATE")
		ss.wr.SetBuffer(protocol.AppendReadyForQuery(b, protocol.TxIdle))
		return true, ss.flushClientIfIdle()
	}
	ss.stmts.dealloc = name
	ss.mu.Unlock()
	ss.ensureRare() // (relayServer looks for the query's tag where rare is set)
	for i := range sql {
		sql[i] = ' ' // (PostgreSQL reads blanks alone as an empty query)
	}
	ss.execTag = tagDealloc
	return false, nil
}

// deallocExecute notes that the Execute about to go runs a portal bound
// to DEALLOCATE name: process serves it (deallocPrepare, deallocSent) if
// the client still holds a statement of that name then.
func (ss *session) deallocExecute(name string) {
	if ss.stmts == nil || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		return // (a client that holds none)
	}
	ss.mu.Lock()
	ss.stmts.dealloc = name
	ss.mu.Unlock()
	ss.execTag = tagDealloc
}

// deallocPrepare sends, before the Execute of a DEALLOCATE that
// deallocExecute noted, the stand-in statement it drops on the server:
// a Close of the name and a Parse of it, their answers swallowed; if the
// client no longer holds the name, nothing, and the server answers the
// DEALLOCATE as PostgreSQL would. It reports whether it sent a stand-in:
// the Execute's expectation then keeps tagDealloc, so that an error in
// answer to the Execute, which comes after the stand-in's Parse ran,
// says the stand-in is left (deallocFailed). mu and wmu are held.
func (ss *session) deallocPrepare(sc *pool.ServerConn) bool {
	t := ss.stmts
	if t == nil || t.dealloc == "" {
		return false
	}
	if t.named[t.dealloc] == nil {
		t.dealloc = ""
		return false
	}
	ss.q.push(expect{kind: kCloseSwallow})
	b := protocol.AppendClose(sc.Wr.Buffer(), 'S', t.dealloc)
	ss.q.push(expect{kind: kParseSwallow})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(b, t.dealloc, standInBody))
	return true
}

// deallocFailed notes an error in answer to the request at the head of
// the ring, head: if it is the Execute of a DEALLOCATE that deallocPrepare
// sent a stand-in before, the stand-in's Parse ran and the DEALLOCATE did
// not, so the server still has a statement of the client's name, and goes
// back to no other client (ring.doubt). mu is held.
func (ss *session) deallocFailed(head expect) {
	if head.kind == kExecute && head.tag == tagDealloc {
		ss.q.doubt = true
	}
}

// deallocSent sets aside the client's statement of the name a DEALLOCATE
// drops as its request (number ss.q.seq) goes: a pendingDrop of that name
// alone, settled by the request's answer (dropRan, dropUndone). mu is
// held.
func (ss *session) deallocSent(t *clientStmts) {
	name := t.dealloc
	t.dealloc = ""
	st := t.named[name]
	if st == nil {
		return
	}
	delete(t.named, name)
	ss.countStmts()
	t.drops = append(t.drops, pendingDrop{seq: ss.q.seq, one: name, named: map[string]*clientStmt{name: st}})
	// (What it does to session state is kept: the server may refuse or
	// skip the DEALLOCATE, and then the statement still exists.)
}

// forgetStmtClass forgets what executing the client's statement name did
// to session state (noteStatement), once the statement is gone for sure: a
// Close or DEALLOCATE of it pgferry answers with no server linked. Where a
// server runs the drop, the class is kept: an Execute of a statement gone
// fails on the server, which undoes what the class recorded, while one
// whose drop the server skipped or refused runs as it always did. Only the
// session's owner calls it.
func (ss *session) forgetStmtClass(name string) {
	if ss.rare != nil {
		delete(ss.rare.stateStmts, name)
	}
}

// deallocAnswered answers a DEALLOCATE sent in a simple Query with a
// server linked (deallocQuery), the request at the head of the ring, at
// its ReadyForQuery of transaction status status: the server ran its
// empty query, whose EmptyQueryResponse relayServer held back. In a
// failed transaction PostgreSQL refuses a DEALLOCATE, and so does pgferry:
// the error, and the client keeps its statement (dropUndone); otherwise
// CommandComplete DEALLOCATE, and the statement is gone (dropRan). The
// caller appends the ReadyForQuery. mu is held.
func (ss *session) deallocAnswered(sc *pool.ServerConn, status byte) {
	seq := ss.q.answered() + 1
	if status == protocol.TxFailed {
		ss.wr.Append(inFailedTransaction)
		ss.dropUndone(sc, seq)
		return
	}
	ss.wr.Append(execTagFrames[tagDealloc])
	ss.dropRan(seq)
}
