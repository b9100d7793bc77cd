// Clients' named prepared statements on shared server connections: each is
// prepared on a server under pgferry's name for its content (router/prepared)
// when first needed there, and Bind/Describe/Close are renamed to match.

package router

import (
	"strconv"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// clientStmt is a named prepared statement of one client: the registered
// statement it stands for (held until the client closes or replaces it,
// or leaves).
type clientStmt struct {
	*prepared.Statement
}

// processParse handles Parse. Unnamed statements pass through. A named one
// is recorded for the client and prepared on the server under pgferry's
// name; if the server already has it, a no-op Parse/Close pair stands in
// so the client still gets its ParseComplete in order.
func (ss *session) processParse(sc *pool.ServerConn, frame []byte) {
	body := protocol.Body(frame)
	name, rest, ok := protocol.CString(body)
	if !ok || len(name) == 0 || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		ss.q.push(expect{kind: kParse})
		sc.Wr.Append(frame)
		return
	}
	ss.entry.stats.clientParses.Add(1)
	st := ss.stmts[string(name)]
	if st == nil || string(st.Body) != string(rest) {
		st = ss.holdStmt(string(name), rest)
	}
	if sc.Stmts.Has(st.ID) {
		ss.q.push(expect{kind: kParse})
		sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), noopStmt, []byte("\x00\x00\x00")))
		ss.q.push(expect{kind: kCloseSwallow})
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
		return
	}
	ss.addServerStmt(sc, st.ID)
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kParse, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), st.Name, st.Body))
}

// holdStmt records the client's statement name for the statement with
// content body, releasing what the name stood for before.
func (ss *session) holdStmt(name string, body []byte) *clientStmt {
	st := &clientStmt{ss.srv.stmts.Acquire(body)}
	if ss.stmts == nil {
		ss.stmts = make(map[string]*clientStmt)
	}
	if old := ss.stmts[name]; old != nil {
		ss.srv.stmts.Release(old.Statement)
	}
	ss.stmts[name] = st
	return st
}

// forgetStmt drops the client's statement name.
func (ss *session) forgetStmt(name []byte) {
	if st := ss.stmts[string(name)]; st != nil {
		delete(ss.stmts, string(name))
		ss.srv.stmts.Release(st.Statement)
	}
}

// forgetStmts drops every statement name of the client (DISCARD ALL,
// DEALLOCATE ALL, the end of the session).
func (ss *session) forgetStmts() {
	for _, st := range ss.stmts {
		ss.srv.stmts.Release(st.Statement)
	}
	clear(ss.stmts)
}

// noopStmt names the throwaway statement behind a Parse the server does not
// need; it is closed right away.
const noopStmt = "pgferry_noop"

// addServerStmt records the statement with ID id on sc, closing the least
// recently used statement on the server when the cache is full.
func (ss *session) addServerStmt(sc *pool.ServerConn, id uint64) {
	if old, evicted := sc.Stmts.Add(id); evicted {
		ss.q.push(expect{kind: kCloseSwallow})
		var name [32]byte
		n := append(name[:0], "pgferry_"...)
		n = strconv.AppendUint(n, old, 36)
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', string(n)))
	}
}

// ensureStmt makes sure the server has the client's statement, injecting a
// Parse whose ParseComplete is swallowed.
func (ss *session) ensureStmt(sc *pool.ServerConn, st *clientStmt) {
	if sc.Stmts.Has(st.ID) {
		return
	}
	ss.addServerStmt(sc, st.ID)
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kParseSwallow, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), st.Name, st.Body))
}

// processBind renames the statement a Bind refers to.
func (ss *session) processBind(sc *pool.ServerConn, frame []byte) {
	ss.entry.stats.binds.Add(1)
	body := protocol.Body(frame)
	portal, rest, ok := protocol.CString(body)
	var name, tail []byte
	if ok {
		name, tail, ok = protocol.CString(rest)
	}
	var st *clientStmt
	if ok && len(name) > 0 {
		st = ss.stmts[string(name)]
	}
	if st == nil {
		ss.q.push(expect{kind: kBind})
		sc.Wr.Append(frame)
		return
	}
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kBind})
	sc.Wr.SetBuffer(protocol.AppendBindRenamed(sc.Wr.Buffer(), portal, st.Name, tail))
}

// processDescribe renames the statement of a Describe('S').
func (ss *session) processDescribe(sc *pool.ServerConn, frame []byte) {
	body := protocol.Body(frame)
	ss.q.push(expect{kind: kDescribe})
	if len(body) < 2 || body[0] != 'S' {
		sc.Wr.Append(frame)
		return
	}
	name, _, ok := protocol.CString(body[1:])
	st := ss.stmts[string(name)]
	if !ok || len(name) == 0 || st == nil {
		sc.Wr.Append(frame)
		return
	}
	// The Describe expectation must follow the injected Parse.
	ss.q.n--
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kDescribe})
	sc.Wr.SetBuffer(protocol.AppendDescribe(sc.Wr.Buffer(), 'S', st.Name))
}

// closeLocally handles Close of a named statement: the client forgets it,
// the server keeps its copy in its LRU. The CloseComplete must arrive in
// order, so with a server linked a Close of a name that never exists goes
// to the server instead. It reports whether the frame was fully handled.
func (ss *session) closeLocally(frame []byte) bool {
	body := protocol.Body(frame)
	if len(body) < 2 || body[0] != 'S' || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		return false
	}
	name, _, ok := protocol.CString(body[1:])
	if !ok || len(name) == 0 {
		return false
	}
	ss.forgetStmt(name)
	ss.mu.Lock()
	sc := ss.server
	if sc == nil {
		ss.mu.Unlock()
		ss.joinPump()
		ss.wr.SetBuffer(protocol.AppendEmpty(ss.wr.Buffer(), protocol.MsgCloseComplete))
		ss.flushClientIfIdle()
		return true
	}
	ss.wmu.Lock()
	ss.q.push(expect{kind: kClose})
	sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
	ss.mu.Unlock()
	ss.flushServerIfIdle(sc)
	ss.wmu.Unlock()
	return true
}
