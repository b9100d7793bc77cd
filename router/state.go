package router

import (
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

// Session state by meaning, whichever protocol carries it.
//
// A simple Query is classified when it arrives and acts at once
// (interceptQuery). In the extended protocol a statement is classified at
// its Parse, but changes nothing until a portal bound to it is executed,
// perhaps many times, perhaps never: so Parse records the class under the
// statement's name (interceptParse, noteStatement), Bind carries it to the
// portal (noteBind), and Execute applies it (interceptExecute) with the
// same code the simple protocol uses (applyState). Drivers that name every statement
// (postgres.js) and those that use the unnamed one are served alike.

// noteStatelessParse is interceptParse for a Parse whose SQL changes no
// session state (see handleFrame).
func (ss *session) noteStatelessParse(frame []byte) {
	if !ss.txnMode {
		return
	}
	if name, _, ok := protocol.CString(protocol.Body(frame)); ok {
		ss.noteStatement(name, nil)
	}
}

// interceptParse pins the session when a statement prepared through the
// extended protocol creates session state, or, with pin_on_session_state
// = false, swaps its text for one that raises ERROR 0A000 when executed
// (the error then arrives in order, from the server). Statements whose
// state pgferry carries (see noteStatement) are recorded for their
// execution; LISTEN and UNLISTEN become listenStandIn, since pgferry
// serves them through the pool's listener, pinned client or not (whose
// UNLISTEN still goes to its server as well). A statement that names a
// prepared statement by pgferry's prefix becomes one that raises
// errReservedName, in session mode too, where it records a DEALLOCATE of
// one name as well (the rest of a class is transaction mode's). It
// returns the frame to relay.
func (ss *session) interceptParse(frame []byte) []byte {
	name, rest, ok := protocol.CString(protocol.Body(frame))
	if !ok {
		return frame
	}
	sql, types, ok := protocol.CString(rest)
	if !ok || !classify.Needed(sql) {
		ss.noteStatement(name, nil)
		return frame
	}
	c := classify.SQL(sql)
	if c.ReservedName {
		ss.noteStatement(name, nil)
		// (typedParams: a Bind with the client's arguments reaches the
		// error.)
		return protocol.AppendParseRaw(nil, string(name), append([]byte(raiseSQL(errReservedName)+"\x00"), typedParams(sql, types)...))
	}
	if !ss.txnMode {
		// Session mode carries no state, but renames protocol-level
		// statements too: a DEALLOCATE of one is served
		// (stmtsdealloc.go), and a DEALLOCATE ALL or DISCARD ALL drops
		// the client's names (applyState), as a simple Query's does.
		ss.noteStatement(name, &classify.Class{Deallocate: c.Deallocate, Discard: c.Discard})
		return frame
	}
	// (A SET of a tracked parameter is recorded at the statement's
	// Execute, applyState, and pins there if its value cannot be: the
	// simple protocol pins for it too.)
	c.Pin = ss.statePin(&c)
	if c.Pin != "" {
		ss.noteStatement(name, nil)
		e := ss.pinRefusal(c.Pin)
		if e == nil {
			ss.pinFor(c.Pin)
			return frame
		}
		return protocol.AppendParseRaw(nil, string(name), append([]byte(raiseSQL(e)+"\x00"), typedParams(sql, types)...))
	}
	ss.noteStatement(name, &c)
	if c.Listen != "" || (!ss.pinned && (c.Unlisten != "" || c.UnlistenAll)) {
		return protocol.AppendParseRaw(nil, string(name), append([]byte(listenStandIn+"\x00"), types...))
	}
	// (A pinned client's UNLISTEN runs on its server too, which may listen
	// itself after a LISTEN pgferry could not serve.)
	return frame
}

// listenStandIn is the statement a LISTEN or UNLISTEN prepared through
// the extended protocol becomes on the server (interceptParse), which
// pgferry's listener serves: an UNLISTEN of a channel no one listens on,
// which changes nothing, but which the server treats as PostgreSQL
// treats the client's statement, where an empty query would not: it
// refuses its Parse in a failed transaction (25P02), answers a Describe
// of it with NoData, and refuses a second Execute of its portal (55000,
// portal cannot be run). Its CommandComplete UNLISTEN is the client's
// (a LISTEN's becomes CommandComplete LISTEN: execTag).
const listenStandIn = `UNLISTEN "pgferry stand-in"`

// noteStatement records what executing the client's statement name does to
// session state (nil or a class that changes nothing: nothing).
func (ss *session) noteStatement(name []byte, c *classify.Class) {
	if c == nil || !c.ChangesState() {
		if ss.rare != nil {
			delete(ss.rare.stateStmts, string(name))
		}
		return
	}
	r := ss.ensureRare()
	if r.stateStmts == nil {
		r.stateStmts = make(map[string]*classify.Class)
	}
	cc := *c
	r.stateStmts[string(name)] = &cc
}

// noteBind carries the class of a Bind's statement to its portal. For a
// client with SETs pending it also classifies a savepoint statement
// (bindSavepoint), which noteStatement leaves out.
func (ss *session) noteBind(frame []byte) {
	r := ss.rare
	if r == nil || (r.stateStmts == nil && r.statePortals == nil && !r.setsSent) {
		return
	}
	portal, rest, ok := protocol.CString(protocol.Body(frame))
	if !ok {
		return
	}
	name, _, ok := protocol.CString(rest)
	if !ok {
		return
	}
	c := r.stateStmts[string(name)]
	if c == nil && r.setsSent {
		c = ss.bindSavepoint(name)
	}
	if c == nil {
		delete(r.statePortals, string(portal))
		return
	}
	if r.statePortals == nil {
		r.statePortals = make(map[string]*classify.Class)
	}
	r.statePortals[string(portal)] = c
}

// interceptExecute applies the session state an Execute's portal changes.
// LISTEN and UNLISTEN are served by the pool's listener (their statement
// became listenStandIn at Parse): the subscription is live before the
// Execute goes on (and undone if the server skips it: listensSkipped),
// and the server's CommandComplete UNLISTEN is answered to the client as
// the command's (execTag).
func (ss *session) interceptExecute(frame []byte) error {
	if ss.rare == nil || ss.rare.statePortals == nil {
		return nil
	}
	portal, _, ok := protocol.CString(protocol.Body(frame))
	if !ok {
		return nil
	}
	c := ss.rare.statePortals[string(portal)]
	if c == nil {
		return nil
	}
	switch {
	case c.Listen != "":
		fresh, err := ss.subscribe(c.Listen)
		if err != nil {
			return ss.acquireError(err)
		}
		ss.listening = true
		ss.listenSent(c.Listen, fresh) // (undone if the server skips it: listensSkipped)
		ss.execTag = tagListen
	case c.Unlisten != "" || c.UnlistenAll:
		ss.execTag = tagUnlisten
	case c.Deallocate != "":
		ss.deallocExecute(c.Deallocate) // (stmtsdealloc.go)
	}
	// A tracked SET pgferry cannot carry (interceptParse pins for it
	// already, unless the value reads otherwise now).
	pin := ss.statePin(c)
	ss.applyState(c)
	if pin != "" && ss.pinOnState {
		ss.pinFor(pin)
	}
	return nil
}

// applyState records what a statement of class c, about to run, does to
// the session's state: DISCARD ALL and DEALLOCATE ALL drop the client's
// statements (DISCARD ALL also its subscriptions), UNLISTEN ends a
// subscription once its transaction commits (unlistenSent), and each SET
// or RESET of a tracked parameter is recorded, in order, to take effect
// when its request has run well (settle). What
// it cannot carry it leaves alone: statePin says why, and the caller pins
// the client or refuses the statement. Both protocols use it.
func (ss *session) applyState(c *classify.Class) {
	if c.Discard {
		// (What the client's statements and portals do to session state
		// is kept: the server may refuse the drop, in a transaction block
		// or an aborted one, and then they still exist.)
		ss.forgetStmts()
	}
	n := c.Changes()
	sets, points := false, false
	unlisten := c.DiscardAll && ss.listening
	for i := range n {
		ch := c.ChangeAt(i)
		unlisten = unlisten || ((ch.Unlisten != "" || ch.UnlistenAll) && ss.listening)
		sets = sets || ch.Sets()
		points = points || ch.Savepoint != 0
	}
	if !sets && !unlisten && !(points && ss.rare != nil && ss.rare.setsSent) {
		return // (a savepoint statement matters only while changes wait)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.dropUnsent()
	if c.DiscardAll && ss.listening {
		ss.unlistenSent("", true, 0) // (listenlinked.go: ends them once it commits)
	}
	for i := range n {
		ch := c.ChangeAt(i)
		if (ch.Unlisten != "" || ch.UnlistenAll) && ss.listening {
			ss.unlistenSent(ch.Unlisten, ch.UnlistenAll, ch.Stmt)
		}
		ss.applyChange(ch)
	}
	ss.rare.setsSent = len(ss.rare.tentative) > 0
}

// Answers that replace an Execute's EmptyQueryResponse (execTag), and
// tagDrop, which marks a request that drops every prepared statement of
// the server (DEALLOCATE ALL, DISCARD ALL) and that pgferry saw go: the
// server's statement cache was cleared as it went (dropSent), and its
// CommandComplete clears nothing more (onCommandComplete). Such a request
// is never answered with an EmptyQueryResponse (it has a statement); its
// frame would stand for itself. tagDealloc marks a simple Query of a
// DEALLOCATE of one of the client's statements, sent as an empty query
// and answered at its ReadyForQuery (deallocAnswered); on an Execute's,
// whose DEALLOCATE the server answers itself, it stays only when a
// stand-in went before it (deallocPrepare): an error in answer to that
// Execute leaves the stand-in on the server (deallocFailed).
const (
	tagNone uint8 = iota
	tagListen
	tagUnlisten
	tagDrop
	tagDealloc
	// tagParse marks the client's Parse of a named statement that made
	// the name stand for another statement (parseSent): its answer
	// settles that (relayServer, dropSkipped).
	tagParse
	// tagDup marks the Parse of dupStmt that the server refuses in place
	// of the client's Parse of a name it holds (stmtsdup.go): its error
	// is told naming the client's statement (duplicateError).
	tagDup
	// tagPrepareRefused marks a simple Query of PREPARE TRANSACTION that
	// PostgreSQL refuses after a LISTEN pgferry's listener served, sent as
	// ROLLBACK: its CommandComplete becomes PostgreSQL's error
	// (prepareRefused).
	tagPrepareRefused
)

var execTagFrames = [...][]byte{
	tagListen:   protocol.AppendCommandComplete(nil, "LISTEN"),
	tagUnlisten: protocol.AppendCommandComplete(nil, "UNLISTEN"),
	tagDrop:     protocol.AppendEmpty(nil, protocol.MsgEmptyQuery),
	tagDealloc:  protocol.AppendCommandComplete(nil, "DEALLOCATE"),
	tagPrepareRefused: protocol.NewError(protocol.SQLStateFeatureNotSupported,
		"cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY").AppendFrame(nil),
}
