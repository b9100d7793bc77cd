// Clients' named prepared statements on shared server connections: each is
// prepared on a server under pgferry's name for its content (router/prepared)
// when first needed there, and Bind/Describe/Close are renamed to match.

package router

import (
	"strconv"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
	"github.com/pgferry/pgferry/router/prepared"
)

// clientStmt is a named prepared statement of one client: the registered
// statement it stands for (held until the client closes or replaces it,
// or leaves).
type clientStmt struct {
	*prepared.Statement
}

// clientStmts is what one client prepared. named maps its statement names
// to statements. unnamed is its unnamed statement's Parse body (after the
// empty name; hasUnnamed false: it has none), which PostgreSQL keeps
// across transactions until the next unnamed Parse or simple Query: a
// driver may Parse it in one transaction and Bind it in the next (pgx's
// describe-exec mode, libpq's PQprepare with an empty name), on another
// server connection by then. The buffer is reused from one Parse to the
// next: no allocation, no lock, in steady state.
//
// unnamedHere says that the linked server's unnamed statement is the
// client's, or that neither has one, as far as what was sent since the
// last Sync tells: a Parse or Close of it sets it, a Sync, a simple Query
// and each new loan (attach) clear it. Within one Sync's messages the
// server runs a prefix and skips the rest after an error, so a Bind that
// relies on an earlier message of the same run is skipped whenever that
// message was; across Syncs nothing is assumed. A Bind or Describe of the
// unnamed statement without it first parses the client's statement on the
// server, or, for a client with none, closes the server's, so no client
// binds another's statement and PostgreSQL's own 26000 answers.
//
// dropping says that a statement about to be sent drops every prepared
// statement of the server and the client's names (DEALLOCATE ALL, DISCARD
// ALL): forgetStmts sets it before the statement goes, dropSent sets the
// client's names and the server's cache aside as it goes (drops), and
// dropNotSent forgets the mark alone when the request is refused instead:
// the client, told its drop failed, still has its statements.
//
// dealloc names the client's statement that a DEALLOCATE about to be sent
// drops (stmtsdealloc.go): deallocQuery or deallocExecute sets it, the
// request's process takes it (deallocPrepare, deallocSent), and
// dropNotSent forgets it when the request is refused instead.
//
// dups are the duplicate Parses sent, some perhaps answered already
// (stmtsdup.go).
//
// dropWait, if not nil, is closed when a drop is settled: a Bind waits
// for it (stmtswait.go); noWait lets the next one go without waiting,
// where no one would relay the answer.
//
// drops are the drops sent and not yet answered, in order (pendingDrop).
// relayServer settles them under mu as their answers come (dropRan,
// dropUndone), so named is written under mu whenever a server is linked.
type clientStmts struct {
	named       map[string]*clientStmt
	unnamed     []byte
	hasUnnamed  bool
	unnamedHere bool
	dropping    bool
	dealloc     string
	drops       []pendingDrop
	dups        []pendingDup
	dropWait    chan struct{}
	noWait      bool
}

// pendingDrop is a drop of every statement (DEALLOCATE ALL, DISCARD ALL),
// or of one of the client's names, which drops none of the server's
// statements: a DEALLOCATE of it (deallocSent) or a Close (closeSent),
// sent to the linked server and not yet answered: what it takes, set
// aside as it went (dropSent), so that the messages behind it see the
// statements gone, and given back if the server does not run it. seq is
// the number of its request (ring.seq). one is the name a drop of one
// name drops ("": every statement). named holds the client's names it
// drops; keys the server's statements it drops, as sc's cache had them,
// most recently used first (0: one prepared again since, addServerStmt:
// its Close and Parse behind the drop say what the server has of it).
// parsed is the statement a Parse of the name one made it stand for
// (parseSent), which goes if the Parse does not run; nil for other drops.
type pendingDrop struct {
	seq    uint64
	one    string
	named  map[string]*clientStmt
	keys   []uint64
	parsed *clientStmt
}

// maxKeptUnnamed bounds the buffer kept for unnamed statements once a
// larger one was replaced by a smaller one.
const maxKeptUnnamed = 4 << 10

// unnamedQuery returns the query text of the client's unnamed statement
// (nil: none).
func (t *clientStmts) unnamedQuery() []byte {
	if t == nil || !t.hasUnnamed {
		return nil
	}
	sql, _, _ := protocol.CString(t.unnamed)
	return sql
}

// lookup returns the client's named statement name (nil: none).
func (t *clientStmts) lookup(name []byte) *clientStmt {
	if t == nil {
		return nil
	}
	return t.named[string(name)]
}

// stmtTable returns the client's clientStmts, making it if needed.
func (ss *session) stmtTable() *clientStmts {
	if ss.stmts == nil {
		ss.stmts = &clientStmts{}
	}
	return ss.stmts
}

// processParse handles Parse. An unnamed statement is recorded for the
// client (keepUnnamed) and passes through. A named one
// is recorded for the client and prepared on the server under pgferry's
// name; if the server already has it, a Parse/Close pair of a throwaway
// statement (noopBody) stands in so the client still gets its
// ParseComplete, or its error, in order. One of a name the client holds
// is refused as PostgreSQL refuses it (stmtsdup.go).
func (ss *session) processParse(sc *pool.ServerConn, frame []byte) {
	body := protocol.Body(frame)
	name, rest, ok := protocol.CString(body)
	if ok && len(name) == 0 {
		ss.keepUnnamed(rest)
	}
	if !ok || len(name) == 0 || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		ss.q.push(expect{kind: kParse})
		sc.Wr.Append(frame)
		return
	}
	ss.entry.stats.clientParses.Add(1)
	if ss.stmts.lookup(name) != nil {
		ss.sendDuplicate(sc, name, rest) // (stmtsdup.go: PostgreSQL's 42P05)
		return
	}
	st := ss.holdStmt(string(name), rest)
	if sc.Stmts.Has(st.ID) {
		ss.q.push(expect{kind: kParse})
		ss.parseSent(string(name), st)
		sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), noopStmt, noopBody(st.Query())))
		ss.q.push(expect{kind: kCloseSwallow})
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
		return
	}
	ss.prepareOnServer(sc, st, kParse)
	ss.parseSent(string(name), st)
}

// parseSent notes the client's Parse of name, just sent (request number
// ss.q.seq), which made the name, free before (a Parse of a name the
// client holds is refused: sendDuplicate), stand for st: a pendingDrop of
// that name that knows st (parsed), settled by the Parse's answer
// (tagParse): its ParseComplete, and the name is st's (dropRan); an
// error, or the server skipped it after an error before it up to the
// Sync, or was lost first, and the name is free again, as in PostgreSQL,
// where a Bind of it then gets 26000 (dropUndone, unparse). A Bind,
// Describe or Parse of the name sent past the Parse's Sync waits for
// that answer (behindDrop). mu is held.
func (ss *session) parseSent(name string, st *clientStmt) {
	ss.stmts.drops = append(ss.stmts.drops, pendingDrop{seq: ss.q.seq, one: name, parsed: st})
	ss.q.tagLast(tagParse)
}

// keepUnnamed records body (a Parse's after the empty name) as the
// client's unnamed statement, about to be the server's too.
func (ss *session) keepUnnamed(body []byte) {
	t := ss.stmtTable()
	if cap(t.unnamed) > maxKeptUnnamed && len(body) <= maxKeptUnnamed {
		t.unnamed = nil // a large one before: not kept for good
	}
	t.unnamed = append(t.unnamed[:0], body...)
	t.hasUnnamed, t.unnamedHere = true, true
}

// forgetUnnamed records a simple Query: PostgreSQL ends the client's
// unnamed statement at one, whether pgferry answers it or a server does.
func (ss *session) forgetUnnamed() {
	if t := ss.stmts; t != nil {
		t.hasUnnamed, t.unnamedHere = false, false
	}
}

// closedUnnamed records a Close of the unnamed statement, sent to the
// server: neither has one.
func (ss *session) closedUnnamed() {
	if t := ss.stmts; t != nil {
		t.hasUnnamed, t.unnamedHere = false, true
	}
}

// unnamedUnknown records a Sync, after which the server's unnamed
// statement is not assumed (see clientStmts).
func (ss *session) unnamedUnknown() {
	if t := ss.stmts; t != nil {
		t.unnamedHere = false
	}
}

// ensureUnnamed makes the linked server's unnamed statement the client's
// before a Bind or Describe of it (see clientStmts): a Parse of the
// client's, or, if it has none, a Close of the server's; either's answer
// is swallowed.
func (ss *session) ensureUnnamed(sc *pool.ServerConn) {
	t := ss.stmts
	if t != nil && t.unnamedHere {
		return
	}
	t = ss.stmtTable()
	t.unnamedHere = true
	if !t.hasUnnamed {
		ss.q.push(expect{kind: kCloseSwallow})
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', ""))
		return
	}
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kParseSwallow})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), "", t.unnamed))
}

// holdStmt records the client's statement name, which it does not hold,
// for the statement with content body, and returns it.
func (ss *session) holdStmt(name string, body []byte) *clientStmt {
	st := &clientStmt{ss.srv.stmts.Acquire(body)}
	t := ss.stmtTable()
	if t.named == nil {
		t.named = make(map[string]*clientStmt)
	}
	t.named[name] = st
	ss.countStmts()
	return st
}

// countStmts records how many statement names the client holds (nStmts),
// after each change to them: set aside by a drop not yet answered, a name
// no longer counts, as PgBouncer's client_prepared_statements no longer
// holds a closed one.
func (ss *session) countStmts() {
	n := 0
	if ss.stmts != nil {
		n = len(ss.stmts.named)
	}
	ss.nStmts.Store(int32(n))
}

// forgetStmt drops the client's statement name, and the name as a drop
// still unanswered set it aside: put back should the drop fail, it would
// stand for a statement the client closed since. mu is held.
func (ss *session) forgetStmt(name []byte) {
	if st := ss.stmts.lookup(name); st != nil {
		delete(ss.stmts.named, string(name))
		ss.srv.stmts.Release(st.Statement)
		ss.countStmts()
	}
	if t := ss.stmts; t != nil {
		for i := range t.drops {
			if st := t.drops[i].named[string(name)]; st != nil {
				delete(t.drops[i].named, string(name))
				ss.srv.stmts.Release(st.Statement)
			}
		}
	}
}

// forgetStmts marks the statement about to be sent as one that drops
// every statement name of the client (DISCARD ALL, DEALLOCATE ALL): the
// names go as it goes (dropSent), not before, so that a refusal (refuse,
// dropNotSent) leaves them, and they come back if the server does not run
// it (dropUndone). The unnamed statement stays, as in PostgreSQL. It
// drops the server's statements too (see dropSent), and its expectation
// says so (tagDrop), unless it carries a LISTEN's answer (a Parse of
// several statements, which the server refuses anyway: its drop is then
// cleared for again when answered).
func (ss *session) forgetStmts() {
	ss.mu.Lock() // (a linked server's answers read ss.stmts: dropUndone)
	ss.stmtTable().dropping = true
	ss.mu.Unlock()
	if ss.execTag == tagNone {
		ss.execTag = tagDrop
	}
}

// releaseStmts drops every statement name of the client, those its drops
// still unanswered set aside too, and gives their identities back: the
// end of the session, which marks no drop, so a client that prepared
// nothing ends without making a table. It takes mu: a pump still running
// may be settling a drop (after stopping, it gives back rather than puts
// back: dropUndone).
func (ss *session) releaseStmts() {
	t := ss.stmts
	if t == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.releaseNamed(t.named)
	ss.countStmts()
	for i := range t.drops {
		ss.releaseNamed(t.drops[i].named)
	}
	clear(t.drops)
	t.drops = t.drops[:0]
	clear(t.dups)
	t.dups = t.dups[:0]
}

// releaseNamed gives back the identities of the statements of named and
// empties it.
func (ss *session) releaseNamed(named map[string]*clientStmt) {
	for _, st := range named {
		ss.srv.stmts.Release(st.Statement)
	}
	clear(named)
}

// preparedAgain forgets id among the server's statements that t's
// unanswered drops set aside: a Close and a Parse of it go now, and say
// what the server has of it, whether the drops run or not.
func (t *clientStmts) preparedAgain(id uint64) {
	for i := range t.drops {
		for j, k := range t.drops[i].keys {
			if k == id {
				t.drops[i].keys[j] = 0
			}
		}
	}
}

// noopStmt names the throwaway statement behind a Parse the server does not
// need; it is closed right away.
const noopStmt = prepared.NamePrefix + "noop"

// noopBody returns the Parse body (after the name) of the throwaway
// statement that stands in for the client's Parse of a statement whose
// query is sql: one that the server refuses where PostgreSQL would
// refuse the client's, in a failed transaction (25P02: postgres.c,
// exec_parse_message, runs only a statement that ends the transaction
// there, and parses an empty one anywhere), so that the client's Parse
// gets that error and the rest of its group is skipped as in
// PostgreSQL: "SELECT" (standInBody), or an empty query for a statement
// that ends a transaction.
func noopBody(sql []byte) []byte {
	if classify.EndsFailedTransaction(sql) {
		return emptyStmtBody
	}
	return standInBody
}

// emptyStmtBody is the Parse body after the name of an empty query with
// no parameter types.
var emptyStmtBody = []byte("\x00\x00\x00")

// addServerStmt records the statement with ID id on sc, closing the least
// recently used statement on the server when the cache is full. The Close's
// expectation carries the evicted ID: should the server skip the Close
// (after an error before it), skipToSync puts the statement back.
func (ss *session) addServerStmt(sc *pool.ServerConn, id uint64) {
	if t := ss.stmts; t != nil && len(t.drops) > 0 {
		t.preparedAgain(id)
	}
	if old, evicted := sc.Stmts.Add(id); evicted {
		ss.q.push(expect{kind: kCloseSwallow, key: old})
		var name [32]byte
		n := append(name[:0], prepared.NamePrefix...)
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
	ss.prepareOnServer(sc, st, kParseSwallow)
}

// prepareOnServer prepares st on sc, which lacks it as far as its cache
// tells, under st's server name, and caches it; kind is the Parse's
// expectation (kParse for the client's own, kParseSwallow for one pgferry
// adds). A Close of the name goes first, its answer swallowed: the server
// may have the statement all the same (a DISCARD ALL or DEALLOCATE ALL
// pgferry did not see go clears the cache when its answer comes, after
// Parses a pipeline sent behind it, see onCommandComplete; one that fails
// or is skipped gives back the cache it set aside as it went, but for the
// statements prepared again behind it, see dropUndone), and
// PostgreSQL refuses a Parse of a name it has (42P05) on every later try.
// A name stands for one content for good (router/prepared): closing and
// preparing it again changes nothing else.
func (ss *session) prepareOnServer(sc *pool.ServerConn, st *clientStmt, kind uint8) {
	ss.addServerStmt(sc, st.ID)
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kCloseSwallow})
	b := protocol.AppendClose(sc.Wr.Buffer(), 'S', st.Name)
	ss.q.push(expect{kind: kind, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(b, st.Name, st.Body))
}

// mightNameAnothers reports whether name, of a statement the client does not
// have, must not reach the server as it is: with statements tracked, no
// server statement has a client's name, and PostgreSQL answers a Bind or
// Describe of one with its own 26000 (invalid_sql_statement_name), except
// a name of pgferry's own form, which may be a statement pgferry prepared
// there for another client (pg_prepared_statements shows their names).
// Such a name is sent with a space after it, which none of pgferry's
// names has: the same error, the message naming it with the space.
func (ss *session) mightNameAnothers(name []byte) bool {
	return len(name) >= len(prepared.NamePrefix) && string(name[:len(prepared.NamePrefix)]) == prepared.NamePrefix &&
		ss.srv.cfg.Load().MaxPreparedStatements != 0
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
	if ok && len(name) == 0 {
		ss.ensureUnnamed(sc)
	}
	var st *clientStmt
	if ok && len(name) > 0 {
		st = ss.stmts.lookup(name)
	}
	if st == nil {
		ss.q.push(expect{kind: kBind})
		if ok && ss.mightNameAnothers(name) {
			sc.Wr.SetBuffer(protocol.AppendBindRenamed(sc.Wr.Buffer(), portal, string(name)+" ", tail))
			return
		}
		sc.Wr.Append(frame)
		return
	}
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kBind, key: st.ID})
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
	if ok && len(name) == 0 {
		// The Describe expectation must follow the injected message.
		ss.q.unpush()
		ss.ensureUnnamed(sc)
		ss.q.push(expect{kind: kDescribe})
		sc.Wr.Append(frame)
		return
	}
	st := ss.stmts.lookup(name)
	if ok && st == nil && ss.mightNameAnothers(name) {
		sc.Wr.SetBuffer(protocol.AppendDescribe(sc.Wr.Buffer(), 'S', string(name)+" "))
		return
	}
	if !ok || st == nil {
		sc.Wr.Append(frame)
		return
	}
	// The Describe expectation must follow the injected Parse.
	ss.q.unpush()
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kDescribe, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendDescribe(sc.Wr.Buffer(), 'S', st.Name))
}
