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
// statement's name (noteStatement), Bind carries it to the portal
// (noteBind), and Execute applies it (interceptExecute) with the same code
// the simple protocol uses (applyState). Drivers that name every statement
// (postgres.js) and those that use the unnamed one are served alike.

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

// noteBind carries the class of a Bind's statement to its portal.
func (ss *session) noteBind(frame []byte) {
	r := ss.rare
	if r == nil || (r.stateStmts == nil && r.statePortals == nil) {
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
	if c == nil {
		delete(r.statePortals, string(portal))
		return
	}
	if r.statePortals == nil {
		r.statePortals = make(map[string]*classify.Class)
	}
	r.statePortals[string(portal)] = c
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
// Execute goes on, and the server's EmptyQueryResponse is answered to the
// client as the command's CommandComplete (execTag).
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
		if err := ss.subscribe(c.Listen); err != nil {
			return ss.acquireError(err)
		}
		ss.listening = true
		ss.execTag = tagListen
	case c.Unlisten != "" || c.UnlistenAll:
		if ss.listening {
			ss.entry.listenerFor(ss.srv.log).Unsubscribe(ss, c.Unlisten)
		}
		ss.execTag = tagUnlisten
	}
	cc := *c
	ss.applyState(&cc)
	return nil
}

// applyState records what a statement of class c, about to run, does to
// the session's state: DISCARD ALL and DEALLOCATE ALL drop the client's
// statements (DISCARD ALL also its subscriptions), and SET/RESET of a
// tracked parameter is recorded to take effect when the transaction ends
// well. It returns the reason to pin for a SET of an untracked parameter
// ("" if none). Both protocols use it.
func (ss *session) applyState(c *classify.Class) (pin string) {
	if c.Discard {
		ss.forgetStmts()
		if ss.rare != nil {
			clear(ss.rare.stateStmts)
			clear(ss.rare.statePortals)
		}
	}
	if c.DiscardAll && ss.listening {
		ss.entry.listenerFor(ss.srv.log).Unsubscribe(ss, "")
		ss.listening = false
	}
	if c.SetName == "" && !c.ResetAll {
		return ""
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := canonicalParam(ss, c.SetName)
	_, reported := ss.entry.welcome[k]
	tracked := c.SetName != "" && ss.tracks(k)
	switch {
	case c.ResetAll:
		// Reported parameters come back in ParameterStatus; forget the
		// rest once the transaction is over.
		for _, pk := range ss.paramKeys {
			if _, rep := ss.entry.welcome[pk]; !rep {
				ss.tentative = append(ss.tentative, paramChange{key: pk})
			}
		}
	case tracked && reported:
		// The server reports the new value (and the old one again on
		// rollback) in ParameterStatus: nothing to record here.
	case tracked:
		// Recorded as written and applied when the transaction ends
		// without error or rollback (see settleParams).
		v := ""
		if !c.Reset {
			v = rawValuePrefix + c.SetValue
		}
		ss.tentative = append(ss.tentative, paramChange{key: k, value: v})
	case !c.Reset:
		return "SET " + c.SetName
	}
	return ""
}

// Answers that replace an Execute's EmptyQueryResponse (execTag).
const (
	tagNone uint8 = iota
	tagListen
	tagUnlisten
)

var execTagFrames = [...][]byte{
	tagListen:   protocol.AppendCommandComplete(nil, "LISTEN"),
	tagUnlisten: protocol.AppendCommandComplete(nil, "UNLISTEN"),
}
