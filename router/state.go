package router

import (
	"strings"
	"unique"

	"github.com/pgferry/pgferry/pool"
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
//
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
// execution; LISTEN and UNLISTEN become an empty query, since pgferry
// serves them through the pool's listener, pinned client or not (whose
// UNLISTEN still goes to its server as well). A statement that names a
// prepared statement by pgferry's prefix becomes one that raises
// errReservedName, in session mode too. It returns the frame to relay.
func (ss *session) interceptParse(frame []byte) []byte {
	name, rest, ok := protocol.CString(protocol.Body(frame))
	if !ok {
		return frame
	}
	sql, types, ok := protocol.CString(rest)
	if !ok || !classify.Needed(sql) {
		if ss.txnMode {
			ss.noteStatement(name, nil)
		}
		return frame
	}
	c := classify.SQL(sql)
	if c.ReservedName {
		if ss.txnMode {
			ss.noteStatement(name, nil)
		}
		// (The client's parameter types stay: a Bind with its arguments
		// reaches the error.)
		return protocol.AppendParseRaw(nil, string(name), append([]byte(raiseSQL(errReservedName)+"\x00"), types...))
	}
	if !ss.txnMode {
		return frame
	}
	// (A SET of a tracked parameter is recorded at the statement's
	// Execute, applyState, and pins there if its value cannot be: the
	// simple protocol pins for it too.)
	c.Pin = ss.statePin(&c)
	if c.Pin != "" {
		ss.noteStatement(name, nil)
		if ss.pinOnState {
			ss.pinFor(c.Pin)
			return frame
		}
		e := protocol.NewError(protocol.SQLStateFeatureNotSupported,
			c.Pin+" is not supported in transaction pooling mode: it would outlive the transaction on a shared server connection")
		return protocol.AppendParseRaw(nil, string(name), []byte(raiseSQL(e)+"\x00\x00\x00"))
	}
	ss.noteStatement(name, &c)
	if c.Listen != "" || (!ss.pinned && (c.Unlisten != "" || c.UnlistenAll)) {
		return protocol.AppendParseRaw(nil, string(name), append([]byte{0}, types...))
	}
	// (A pinned client's UNLISTEN runs on its server too, which may listen
	// itself after a LISTEN pgferry could not serve.)
	return frame
}

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

// bindSavepoint classifies the client's statement name, bound while the
// client has SETs pending, if it is a savepoint statement (nil if not):
// its text is the one pgferry keeps for preparing it on other server
// connections (stmts.go), however long ago the client prepared it.
func (ss *session) bindSavepoint(name []byte) *classify.Class {
	var sql []byte
	if len(name) == 0 {
		sql = ss.stmts.unnamedQuery()
	} else if st := ss.stmts.lookup(name); st != nil {
		sql = st.Query()
	}
	if sql == nil || !classify.Savepoint(sql) || !ss.setsPending() {
		return nil
	}
	c := classify.SQL(sql)
	if c.Savepoint == 0 {
		return nil
	}
	return &c
}

// setsPending reports whether changes of the client wait for their
// transaction's end (pendingParams), for the session's owner, which takes
// mu for it only while setsSent says some may.
func (ss *session) setsPending() bool {
	r := ss.rare
	if r == nil || !r.setsSent {
		return false
	}
	ss.mu.Lock()
	n := len(r.tentative)
	ss.mu.Unlock()
	r.setsSent = n > 0
	return r.setsSent
}

// noteClose forgets a closed statement's or portal's class.
func (ss *session) noteClose(frame []byte) {
	body := protocol.Body(frame)
	if len(body) < 2 {
		return
	}
	name, _, ok := protocol.CString(body[1:])
	if !ok || ss.rare == nil {
		return
	}
	switch body[0] {
	case 'S':
		delete(ss.rare.stateStmts, string(name))
	case 'P':
		delete(ss.rare.statePortals, string(name))
	}
}

// interceptExecute applies the session state an Execute's portal changes.
// LISTEN and UNLISTEN are served by the pool's listener (their statement
// became an empty query at Parse): the subscription is live before the
// Execute goes on (and undone if the server skips it: listensSkipped),
// and the server's EmptyQueryResponse is answered to the client as the
// command's CommandComplete (execTag).
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

// statePin is the reason to pin the client for a statement of class c,
// about to run ("" if none): c's own Pin, or a SET pgferry cannot carry
// (see changePin).
func (ss *session) statePin(c *classify.Class) string {
	if c.Pin != "" {
		return c.Pin
	}
	n := c.Changes()
	sets := false
	for i := range n {
		ch := c.ChangeAt(i)
		if ch.Savepoint != 0 && ch.SavepointName == "" && (sets || (ss.rare != nil && ss.rare.setsSent)) {
			// A savepoint whose name pgferry cannot read, while SETs may
			// wait: which of them it keeps is the server's to know.
			return pinSavepointName
		}
		sets = sets || ch.Sets()
	}
	if !sets {
		return ""
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	scs := ss.scsPending()
	for i := range n {
		ch := c.ChangeAt(i)
		if pin := ss.changePin(ch, scs); pin != "" {
			return pin
		}
		scs = scs || (ch.Sets() && (ch.ResetAll || strings.EqualFold(ch.SetName, scsName)))
	}
	return ""
}

// pinSavepointName is the pin reason of a savepoint statement whose name
// pgferry cannot read, sent while changes of the client may wait.
const pinSavepointName = "a savepoint name pgferry cannot read"

// changePin is the reason to pin for one change ("" if none): a SET of a
// parameter pgferry does not track, or of a tracked one it records
// (applyChange) whose value it cannot (see setValue), under either
// reading of its strings if scs says standard_conforming_strings may
// change before it runs. mu is held.
func (ss *session) changePin(ch *classify.Change, scs bool) string {
	if ch.SetName == "" || ch.Reset {
		return ""
	}
	k := canonicalParam(ss, ch.SetName)
	if !ss.tracks(k) {
		return "SET " + ch.SetName
	}
	if _, reported := ss.entry.welcome[k]; reported {
		return "" // the server reports it (ParameterStatus)
	}
	if _, ok := ss.setValue(ch.SetValue); !ok {
		return pinSetValue(ch.SetName)
	}
	if _, ok := classify.PortableValue(ch.SetValue, !ss.standardStrings()); scs && !ok {
		return pinSetValue(ch.SetName)
	}
	return ""
}

// applyState records what a statement of class c, about to run, does to
// the session's state: DISCARD ALL and DEALLOCATE ALL drop the client's
// statements (DISCARD ALL also its subscriptions), UNLISTEN ends a
// subscription once its request is answered (unlistenSent), and each SET
// or RESET of a tracked parameter is recorded, in order, to take effect
// when its request has run well (settle). What
// it cannot carry it leaves alone: statePin says why, and the caller pins
// the client or refuses the statement. Both protocols use it.
func (ss *session) applyState(c *classify.Class) {
	if c.Discard {
		ss.forgetStmts()
		if ss.rare != nil {
			clear(ss.rare.stateStmts)
			clear(ss.rare.statePortals)
		}
	}
	if c.DiscardAll && ss.listening {
		ss.unlistenSent("", true) // (listen.go: ends them once it ran)
	}
	n := c.Changes()
	sets, points := false, false
	for i := range n {
		ch := c.ChangeAt(i)
		if (ch.Unlisten != "" || ch.UnlistenAll) && ss.listening {
			ss.unlistenSent(ch.Unlisten, ch.UnlistenAll)
		}
		sets = sets || ch.Sets()
		points = points || ch.Savepoint != 0
	}
	if !sets && !(points && ss.rare != nil && ss.rare.setsSent) {
		return // (a savepoint statement matters only while changes wait)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.dropUnsent()
	for i := range n {
		ss.applyChange(c.ChangeAt(i))
	}
	ss.rare.setsSent = len(ss.rare.tentative) > 0
}

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

// scsName is the parameter whose setting decides how the values of SETs
// read (see setValue).
const scsName = "standard_conforming_strings"

// opSCS marks a pending change of standard_conforming_strings, a
// reported parameter, in tentative: the SETs after it read their values
// by it before the server reports it (scsAt). Its value is the setting.
const opSCS uint8 = 0x80

// scsPending reports whether a change of standard_conforming_strings
// the server has not reported yet may stand before a change recorded now:
// one pending (opSCS), or one that ran in the answers relayed so far,
// still unreported (scsLive). mu is held.
func (ss *session) scsPending() bool {
	r := ss.rare
	if r == nil {
		return false
	}
	if r.scsLive != "" {
		return true
	}
	for i := range r.tentative {
		if r.tentative[i].op == opSCS {
			return true
		}
	}
	return false
}

// scsAt follows, as the server answers the statement at position (seq,
// stmt), the setting of standard_conforming_strings the statements after
// it read by: that of a change of it that ran there (scsLive, which the
// ParameterStatus before the next ReadyForQuery reports: scsReported),
// and for a SET that ran there whose value reads otherwise under the
// other setting (alt), the reading of the setting in effect. mu is held.
func (ss *session) scsAt(sc *pool.ServerConn, seq uint64, stmt int) {
	r := ss.rare
	for i := range r.tentative {
		ch := &r.tentative[i]
		if ch.seq != seq || ch.stmt != stmt {
			continue
		}
		switch {
		case ch.op == opSCS:
			if r.scsSeq != seq {
				r.scsSeq, r.scsBefore = seq, r.scsLive
			}
			r.scsLive = "on"
			if offValue(ch.value) {
				r.scsLive = "off"
			}
		case ch.alt != "":
			live := r.scsLive
			if ch.query && r.scsSeq == seq {
				live = r.scsBefore // (read before its own changes ran)
			}
			if live == "" {
				live = "on"
				if v, ok := sc.Params[scsName]; ok && offValue(v) {
					live = "off"
				}
			}
			switch {
			case live == scsUnknown:
				ch.aborted = true // (which reading ran, pgferry cannot tell)
			case (live == "on") == ch.altOn:
				ch.value = ch.alt
			}
			ch.alt = ""
		}
	}
}

// scsUndone follows a ROLLBACK or ROLLBACK TO SAVEPOINT the server ran
// while changes of standard_conforming_strings are pending or unreported:
// it may have undone them, to a setting pgferry does not follow until the
// server reports it; a SET whose value reads otherwise under it is
// dropped meanwhile (scsAt). mu is held.
func (ss *session) scsUndone() {
	if ss.scsPending() {
		ss.rare.scsLive = scsUnknown
	}
}

// scsReported forgets scsLive once the server reported the setting
// (its ParameterStatus comes before ReadyForQuery). mu is held.
func (ss *session) scsReported() {
	if ss.rare != nil {
		ss.rare.scsLive, ss.rare.scsBefore, ss.rare.scsSeq = "", "", 0
	}
}

// scsUnknown is scsLive after a rollback of a change of
// standard_conforming_strings (scsUndone).
const scsUnknown = "?"

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
	ss.settle(sc, ss.q.answered()+1, 0, true)
}

// settle applies (keep) or drops the pending changes that run before the
// statement at position (seq, stmt) (see paramChange), and forgets the
// savepoint statements among them: their transaction ended there. A
// change an error aborted is dropped whatever keep says. A dropped change
// leaves the parameter unknown on sc: the server is back at the value it
// had before, which sc.Params holds, but marking it costs the next client
// only a SET, and nothing pgferry misread can then reach it. mu is held.
func (ss *session) settle(sc *pool.ServerConn, seq uint64, stmt int, keep bool) {
	ss.keepTentative(func(ch *paramChange) bool {
		switch {
		case ch.seq == 0 || !ch.before(seq, stmt):
			return true
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

// savepointStatement follows a savepoint statement the server ran while
// changes are pending, at position (seq, stmt): it reports false if
// pgferry recorded none there (a ROLLBACK it did not record, whose tag a
// ROLLBACK TO shares, is a whole transaction's). mu is held.
func (ss *session) savepointStatement(seq uint64, stmt int) bool {
	t := ss.rare.tentative
	at := -1
	for i := range t {
		if t[i].op != 0 && t[i].op != opSCS && t[i].seq == seq && t[i].stmt == stmt {
			at = i
			break
		}
	}
	if at < 0 {
		return false
	}
	switch op := t[at].op; op {
	case classify.SavepointDefine:
		return true // its entry marks the savepoint
	case classify.SavepointRelease, classify.SavepointRollback:
		if op == classify.SavepointRollback {
			ss.scsUndone()
		}
		// The savepoint is the last one so named before: it and those
		// after it end (ROLLBACK TO keeps the savepoint itself). None
		// recorded: it came before every change pending, all of its
		// transaction.
		from := 0
		for i := at - 1; i >= 0; i-- {
			if t[i].op == classify.SavepointDefine && t[i].key == t[at].key {
				from = i
				if op == classify.SavepointRollback {
					from++
				}
				break
			}
		}
		i := -1
		ss.keepTentative(func(ch *paramChange) bool {
			i++
			switch {
			case i == at:
				return false
			case i >= at || i < from:
				if op == classify.SavepointRollback && i < from {
					ch.aborted = false // rescued from an error after the savepoint
				}
				return true
			case op == classify.SavepointRelease:
				return ch.op == 0 // its changes stay, its savepoints go
			}
			return false // rolled back
		})
	}
	return true
}

// setValue is the value of a client's SET as pgferry records it for
// replay (classify.PortableValue): SQL text that reads the same whatever
// standard_conforming_strings is on the server it is replayed on, read as
// the client's setting reads it now. ok is false for one it cannot record
// so. mu is held.
func (ss *session) setValue(v string) (string, bool) {
	return classify.PortableValue(v, ss.standardStrings())
}

// standardStrings reports whether standard_conforming_strings is on for
// the client, as the server last reported it. mu is held.
func (ss *session) standardStrings() bool {
	scs, ok := ss.params.lookup(scsName)
	if !ok {
		scs, ok = ss.entry.welcome[scsName]
	}
	return !ok || !offValue(scs)
}

// offValue reports whether v spells false as a PostgreSQL boolean setting
// does (parse_bool in src/backend/utils/adt/bool.c): off, or a prefix of
// false or no, or 0.
func offValue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "of", "f", "fa", "fal", "fals", "false", "n", "no", "0":
		return true
	}
	return false
}

// pinSetValue is the pin reason of a SET of a tracked parameter whose
// value pgferry cannot replay.
func pinSetValue(name string) string {
	return "SET " + name + " to a value pgferry cannot replay"
}

// Answers that replace an Execute's EmptyQueryResponse (execTag), and
// tagDrop, which marks a request that drops every prepared statement of
// the server (DEALLOCATE ALL, DISCARD ALL) and that pgferry saw go: the
// server's statement cache was cleared as it went (dropSent), and its
// CommandComplete clears nothing more (onCommandComplete). Such a request
// is never answered with an EmptyQueryResponse (it has a statement); its
// frame would stand for itself.
const (
	tagNone uint8 = iota
	tagListen
	tagUnlisten
	tagDrop
)

var execTagFrames = [...][]byte{
	tagListen:   protocol.AppendCommandComplete(nil, "LISTEN"),
	tagUnlisten: protocol.AppendCommandComplete(nil, "UNLISTEN"),
	tagDrop:     protocol.AppendEmpty(nil, protocol.MsgEmptyQuery),
}
