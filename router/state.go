package router

import (
	"strings"

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
	if pin := ss.applyState(&cc); pin != "" && ss.pinOnState {
		// A tracked SET pgferry cannot carry (interceptParse pins for it
		// already, unless the value reads otherwise now).
		ss.pinFor(pin)
	}
	return nil
}

// applyState records what a statement of class c, about to run, does to
// the session's state: DISCARD ALL and DEALLOCATE ALL drop the client's
// statements (DISCARD ALL also its subscriptions), and SET/RESET of a
// tracked parameter is recorded to take effect when the transaction ends
// well. It returns the reason to pin for a SET of an untracked parameter,
// or of a tracked one whose value cannot be replayed (see setValue), ""
// if none. Both protocols use it.
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
		// Recorded as SQL text and applied when the transaction ends
		// without error or rollback (see settleParams).
		v := ""
		if !c.Reset {
			sv, ok := ss.setValue(c.SetValue)
			if !ok {
				return pinSetValue(c.SetName)
			}
			v = rawValuePrefix + sv
		}
		ss.tentative = append(ss.tentative, paramChange{key: k, value: v})
	case !c.Reset:
		return "SET " + c.SetName
	}
	return ""
}

// parsedSetPin is the reason to pin, at its Parse, for a statement that
// SETs name to value ("" if none): the parameter is not tracked, or it is
// recorded at the statement's Execute (applyState) and its value cannot
// be, which the simple protocol pins for too.
func (ss *session) parsedSetPin(name, value string) string {
	k := canonicalParam(ss, name)
	if !ss.tracks(k) {
		return "SET " + name
	}
	if _, reported := ss.entry.welcome[k]; reported {
		return ""
	}
	ss.mu.Lock()
	_, ok := ss.setValue(value)
	ss.mu.Unlock()
	if !ok {
		return pinSetValue(name)
	}
	return ""
}

// setValue is the value of a client's SET as pgferry records it for
// replay (classify.PortableValue): SQL text that reads the same whatever
// standard_conforming_strings is on the server it is replayed on, read as
// the client's setting reads it now. ok is false for one it cannot record
// so. mu is held.
func (ss *session) setValue(v string) (string, bool) {
	scs, ok := ss.params.lookup("standard_conforming_strings")
	if !ok {
		scs, ok = ss.entry.welcome["standard_conforming_strings"]
	}
	return classify.PortableValue(v, !ok || !offValue(scs))
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
