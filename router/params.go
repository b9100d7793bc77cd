package router

import (
	"encoding/binary"
	"strings"
	"unique"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
	"github.com/pgferry/pgferry/router/prepared"
)

// trackedBase are the parameters PgBouncer always carries from client to
// server; track_extra_parameters adds more.
var trackedBase = []string{"client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name",
	// Reported since PostgreSQL 14; read routing follows it.
	"default_transaction_read_only"}

// startupNotParams are startup keys that are not run-time parameters.
var startupNotParams = map[string]bool{"user": true, "database": true, "options": true, "replication": true}

// trackedKeys is the tracked parameter set of one configuration: the keys
// in order and by lower-case name. Sessions share it (their paramKeys start
// as keys, whose capacity ends at its length, so a session adding a key
// copies it first).
type trackedKeys struct {
	cfg   *configs.Config
	keys  []string
	lower map[string]string // A-Z lowered (gucLower) -> canonical
}

// trackedFor returns the tracked parameter set of cfg, built once per
// configuration.
func (s *Server) trackedFor(cfg *configs.Config) *trackedKeys {
	if tk := s.tracked.Load(); tk != nil && tk.cfg == cfg {
		return tk
	}
	tk := &trackedKeys{cfg: cfg, lower: make(map[string]string)}
	for _, k := range append(append([]string(nil), trackedBase...), cfg.TrackExtraParameters...) {
		lk := gucLower(k)
		if _, ok := tk.lower[lk]; !ok {
			tk.lower[lk] = k
			tk.keys = append(tk.keys, k)
		}
	}
	tk.keys = tk.keys[:len(tk.keys):len(tk.keys)]
	s.tracked.Store(tk)
	return tk
}

// setParam records the value the client wants for k. mu is held (or the
// session is not yet shared).
func (ss *session) setParam(k, v string) { ss.params.set(k, v) }

// paramList holds the few parameters one client sets, as a slice rather
// than a map: a client sets a handful, and a map costs an idle session
// some 300 bytes more.
type paramList []paramKV

type paramKV struct{ k, v string }

func (l paramList) lookup(k string) (string, bool) {
	for i := range l {
		if l[i].k == k {
			return l[i].v, true
		}
	}
	return "", false
}

func (l paramList) get(k string) string {
	v, _ := l.lookup(k)
	return v
}

func (l *paramList) set(k, v string) {
	for i := range *l {
		if (*l)[i].k == k {
			(*l)[i].v = v
			return
		}
	}
	*l = append(*l, paramKV{k, v})
}

func (l *paramList) del(k string) {
	for i := range *l {
		if (*l)[i].k == k {
			n := len(*l) - 1
			copy((*l)[i:], (*l)[i+1:])
			(*l)[n] = paramKV{}
			*l = (*l)[:n]
			return
		}
	}
}

// initParams records the parameters this client wants on every server it
// uses: the tracked set, plus whatever it sent in its startup packet.
func (ss *session) initParams(cfg *configs.Config, st *protocol.Startup) error {
	tk := ss.srv.trackedFor(cfg)
	ss.paramKeys = tk.keys
	var extra map[string]string // gucLower -> canonical, beyond tk
	add := func(k string) string {
		lk := gucLower(k)
		if c, ok := tk.lower[lk]; ok {
			return c
		}
		if c, ok := extra[lk]; ok {
			return c
		}
		if extra == nil {
			extra = make(map[string]string)
		}
		k = intern(gucName(k)) // (one spelling for every client: sc.Params is shared)
		extra[lk] = k
		ss.paramKeys = append(ss.paramKeys, k)
		return k
	}
	ignored := make(map[string]bool)
	for _, k := range cfg.IgnoreStartupParameters {
		ignored[strings.ToLower(k)] = true
	}
	for _, p := range st.Params {
		if startupNotParams[p.Key] || ignored[strings.ToLower(p.Key)] {
			continue
		}
		ss.setParam(add(p.Key), intern(p.Value))
	}
	if opts := st.Get("options"); opts != "" && !ignored["options"] {
		kv, err := parseOptions(opts)
		if err != nil {
			return err
		}
		for _, p := range kv {
			ss.setParam(add(p.Key), intern(p.Value))
		}
	}
	ss.appName = ss.params.get("application_name")
	ss.paramsDirty = true
	return nil
}

// intern returns s as a shared copy (unique.Make), for what a session
// keeps of its startup packet: its user and database names (startupNames),
// its parameters' names and values. Kept as they come, they are substrings
// of the session's own copy of the packet (protocol.ParseStartup), which
// each of them keeps alive, 50 to 200 bytes per idle client; and in a burst
// of TLS logins those copies are made among the handshakes' garbage, in the
// size classes it fills, so that once it is collected they keep spans
// resident that would otherwise go back to the OS (ferrybench idle-tls:
// about 500 bytes per client at 1,000 clients, 90 for plain ones). Sessions
// alike share one copy, at least among those logging in between two
// garbage collections (the copy itself outlives unique's entry for it).
func intern(s string) string { return unique.Make(s).Value() }

// syncParams makes sc's session parameters match what this client wants,
// with one injected Query whose responses are swallowed (two when the
// client's client_encoding must come first, below). mu and wmu are held.
// It allocates only when something differs.
//
// PostgreSQL converts a query's bytes from client_encoding to its own
// encoding as it receives the query, before it runs any of it
// (exec_simple_query reads the string through pq_getmsgstring, which
// calls pg_client_to_server), so a replay's SET of client_encoding does
// not apply to the values in its own query: under the encoding of the
// server connection's previous client, a byte that is not ASCII reads as
// another character, or the query fails whole (22021) and none of the
// client's parameters is set. So when values that are not ASCII follow a
// change of client_encoding, the change goes as a query of its own first,
// and the values in a second one, which the server reads once the first
// has run: no round trip more (both go out together), one ReadyForQuery
// more to swallow. The values are SQL text the client wrote, or values
// the server reported to it, in the client's encoding.
func (ss *session) syncParams(sc *pool.ServerConn) {
	ss.replays = 0
	if ss.pendingParams() {
		ss.dropUnanswered()
	}
	if ss.rare != nil && ss.rare.scsLive != "" {
		// A change of standard_conforming_strings that ran on a server
		// lost before it reported it: sc never saw it (statescs.go, scsAt).
		ss.scsReported()
	}
	if ss.paramsDirty {
		ss.paramsKey = ss.paramSetKey()
		ss.paramsDirty = false
	}
	if sc.ParamsKey == ss.paramsKey {
		// Last synced for an identical parameter set and unchanged since:
		// the common case of clients that never SET anything. The sets are
		// interned: comparing them is comparing two pointers.
		return
	}
	defer func() { sc.ParamsKey = ss.paramsKey }()
	// enc holds the change of client_encoding, sql the others; keys
	// names what each statement of sql sets (sc.Replay, behind the
	// entries of the BEGIN and of enc's statement).
	var sql, enc []byte
	keys := append(sc.Replay[:0], "", encodingName)
	defaults := ss.entry.welcome
	for _, k := range ss.paramKeys {
		out := &sql
		if k == encodingName {
			out = &enc
		}
		n := len(*out)
		want, ok := ss.params.lookup(k)
		have, has := sc.Params[k]
		if !ok {
			def, known := defaults[k]
			switch {
			case known && has && have != def:
				*out = appendSet(*out, k, def)
				sc.Params[k] = def
			case !known && has:
				*out = append(*out, "RESET "...)
				*out = appendIdent(*out, k)
				*out = append(*out, ';')
				delete(sc.Params, k)
			}
		} else if !has || have != want {
			*out = appendSet(*out, k, want)
			sc.Params[k] = want
		}
		if out == &sql && len(sql) > n {
			keys = append(keys, k)
		}
	}
	// Parameters another client set that this one never mentions. Without
	// the server's own parameter set there is no telling: leave them.
	for k := range sc.Params {
		if defaults == nil {
			break
		}
		if _, reported := defaults[k]; reported || ss.tracks(k) {
			continue
		}
		sql = append(sql, "RESET "...)
		sql = appendIdent(sql, k)
		sql = append(sql, ';')
		keys = append(keys, k)
		delete(sc.Params, k)
	}
	if len(sql) == 0 && enc == nil {
		sc.Replay = keys[:0] // (its storage kept for the next replay)
		return
	}
	if enc == nil {
		keys = append(keys[:1], keys[2:]...)
	}
	sc.Replay, sc.ReplayRan = append(keys, ""), 0
	// The SETs go in a transaction of their own, BEGIN to COMMIT: one the
	// server refuses leaves it inside that transaction, aborted, where it
	// runs nothing of what the client sent behind them (guardReplay).
	b := sc.Wr.Buffer()
	begin := "BEGIN;"
	if enc != nil && !isASCII(sql) {
		ss.q.push(expect{kind: kQuerySwallow})
		ss.replays++
		b = protocol.AppendQuery(b, begin+string(enc))
		enc, begin = nil, ""
	}
	ss.q.push(expect{kind: kQuerySwallow})
	ss.replays++
	sc.Wr.SetBuffer(protocol.AppendQuery(b, begin+string(enc)+string(sql)+"COMMIT"))
}

// encodingName is the parameter in whose encoding the server reads a
// query's bytes.
const encodingName = "client_encoding"

// isASCII reports whether b has no byte above 0x7F.
func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// paramSetKey encodes what the client wants for every tracked parameter,
// each name and value length-prefixed so that equal keys mean equal
// parameter sets, and interns it: clients with the same set, most of them,
// share one copy (a key is 100-200 bytes per idle client otherwise). mu is
// held.
func (ss *session) paramSetKey() unique.Handle[string] {
	n := 1
	for _, k := range ss.paramKeys {
		n += 2 + len(k) + 2 + len(ss.params.get(k))
	}
	var stack [256]byte // the usual set fits: no allocation but the string
	b := stack[:0]
	if n > len(stack) {
		b = make([]byte, 0, n)
	}
	b = append(b, 'p')
	for _, k := range ss.paramKeys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		if v, ok := ss.params.lookup(k); ok {
			b = binary.AppendUvarint(b, uint64(len(v))+1)
			b = append(b, v...)
		} else {
			b = append(b, 0)
		}
	}
	return unique.Make(string(b))
}

func (ss *session) tracks(k string) bool {
	for _, t := range ss.paramKeys {
		if t == k {
			return true
		}
	}
	return false
}

func appendSet(sql []byte, k, v string) []byte {
	sql = append(sql, "SET "...)
	sql = appendIdent(sql, k)
	sql = append(sql, " TO "...)
	// Values recorded from a SET statement are SQL text (e.g. "public, x"),
	// written to read the same whatever standard_conforming_strings is
	// (classify.PortableValue); values from ParameterStatus or startup are
	// literals.
	if strings.HasPrefix(v, rawValuePrefix) {
		sql = append(sql, v[len(rawValuePrefix):]...)
	} else {
		sql = appendLiteral(sql, v)
	}
	return append(sql, ';')
}

// appendLiteral appends v as a string constant that PostgreSQL reads as v
// whatever standard_conforming_strings is: PostgreSQL reads the whole of a
// query before it runs any of it, so syncParams's SETs are read with the
// setting the server had before them, perhaps another client's. Without
// a backslash, a plain '...' reads the same either way; with one, an
// escape string E'...' with the backslashes doubled does (quotes are
// doubled, never \', which backslash_quote may refuse).
func appendLiteral(sql []byte, v string) []byte {
	if strings.IndexByte(v, '\\') >= 0 {
		sql = append(sql, 'E')
		v = strings.ReplaceAll(v, `\`, `\\`)
	}
	sql = append(sql, '\'')
	sql = append(sql, strings.ReplaceAll(v, "'", "''")...)
	return append(sql, '\'')
}

// rawValuePrefix marks a value recorded as SQL text from a client's SET
// statement rather than as a literal. It cannot occur in a GUC value.
const rawValuePrefix = "\x00raw:"

func appendIdent(sql []byte, k string) []byte {
	sql = append(sql, '"')
	sql = append(sql, strings.ReplaceAll(k, `"`, `""`)...)
	return append(sql, '"')
}

// onParameterStatus updates the server's and (unless pgferry itself caused
// it) the client's view of a reported parameter. mu is held.
func (ss *session) onParameterStatus(sc *pool.ServerConn, frame []byte) {
	k, rest, ok := protocol.CString(protocol.Body(frame))
	v, _, ok2 := protocol.CString(rest)
	if !ok || !ok2 {
		return
	}
	sc.Params[string(k)] = string(v)
	sc.ParamsKey = unique.Handle[string]{}
	head, _ := ss.q.peek()
	if head.kind == kQuerySwallow {
		return
	}
	if ss.tracks(string(k)) {
		ss.setParam(string(k), string(v))
		ss.paramsDirty = true
	}
	ss.wr.Append(frame)
}

// onCommandComplete notices statements that drop every prepared statement
// on the server, and, while changes of the client are pending, those that
// end a transaction or act on a savepoint: a COMMIT keeps the changes
// before it, a ROLLBACK undoes them, a RELEASE or ROLLBACK TO SAVEPOINT
// (the same tag as ROLLBACK) does what savepointStatement says. Each is
// placed among the statements of its request (stmtAnswered): in a query
// of several, those after it are not its. mu is held.
func (ss *session) onCommandComplete(sc *pool.ServerConn, frame []byte) {
	b := protocol.Body(frame)
	if ss.pendingParams() {
		seq, stmt := ss.stmtAnswered()
		ss.scsAt(sc, seq, stmt)
		switch string(b) {
		case "COMMIT\x00":
			ss.settle(sc, seq, stmt, true)
		case "ROLLBACK\x00":
			if !ss.savepointStatement(seq, stmt) {
				ss.scsUndone()
				ss.settle(sc, seq, stmt, false)
			}
		case "SAVEPOINT\x00", "RELEASE\x00":
			ss.savepointStatement(seq, stmt)
		}
	}
	if len(b) > 0 && b[0] == 'D' {
		if tag := string(b); tag == "DISCARD ALL\x00" || tag == "DEALLOCATE ALL\x00" {
			// One pgferry saw go (tagDrop) cleared the cache then, and
			// what it holds now was sent behind it: the server has it; it
			// ran, so what it set aside goes for good (dropRan). One it
			// did not see, in a query read two ways (classify's
			// pinStringEscapes) or executed in session mode, whose
			// Parses are not classified, clears it now.
			if head, _ := ss.q.peek(); head.tag != tagDrop {
				sc.Stmts.Clear()
				ss.dropsUnseen()
			}
			ss.dropRan(ss.q.answered() + 1)
		} else if tag == "DEALLOCATE\x00" {
			ss.dropRan(ss.q.answered() + 1) // (a DEALLOCATE of one of the client's names: deallocSent)
		}
	}
}

// interceptQuery looks at a simple Query before it is relayed. It records
// parameters the client sets, forgets statements on DISCARD/DEALLOCATE ALL
// and pins the session (or refuses the query) when it creates state that
// cannot move between server connections. done reports that the query was
// answered without the server.
func (ss *session) interceptQuery(frame []byte) (done bool, err error) {
	body := protocol.Body(frame)
	if len(body) == 0 {
		return false, nil
	}
	sql := body[:len(body)-1]
	if !classify.Needed(sql) && !(classify.Savepoint(sql) && ss.setsPending()) {
		// (Needed passes over RELEASE and ROLLBACK TO SAVEPOINT, which
		// matter only while changes of the client wait: applyChange.)
		return false, nil
	}
	c := classify.SQL(sql)
	if c.ReservedName {
		return ss.refuse(errReservedName) // before it is recorded, or pins
	}
	if c.PrepareTransaction && ss.txnMode && !c.Several && ss.listenInTransaction() {
		ss.prepareRefused(sql) // (listenlinked.go)
		return false, nil
	}
	if c.Deallocate != "" {
		if done, err := ss.deallocQuery(c.Deallocate, sql); done || err != nil {
			return done, err // (stmtsdealloc.go: one of the client's protocol-level statements)
		}
	}
	if ss.txnMode && !c.Several && (c.Listen != "" || c.Unlisten != "" || c.UnlistenAll) {
		if done, err := ss.handleListen(&c); done || err != nil {
			return done, err
		}
		if c.Listen != "" {
			// A server is linked: inside a transaction, or pinned.
			if err := ss.listenLinked(c.Listen, sql); err != nil {
				return false, err
			}
		}
		// (An UNLISTEN goes to the server too, which may listen itself:
		// applyState ends the subscription in pgferry's listener.)
	}
	pin := ss.statePin(&c)
	if pin != "" && ss.txnMode && !ss.pinOnState {
		return ss.pinFor(pin) // refused whole: none of it runs
	}
	ss.applyState(&c)
	if pin != "" && ss.txnMode {
		return ss.pinFor(pin)
	}
	return false, nil
}

// canonicalParam maps a parameter name to the spelling this session tracks
// it under (GUC names are case-insensitive).
func canonicalParam(ss *session, name string) string {
	for _, k := range ss.paramKeys {
		if gucEqual(k, name) {
			return k
		}
	}
	return name
}

// pinFor ties the client to its server connection for the rest of the
// session, or refuses the statement where it may not be pinned: with
// pin_on_session_state = false, or on a read replica (pinRefusal).
func (ss *session) pinFor(reason string) (bool, error) {
	if e := ss.pinRefusal(reason); e != nil {
		return ss.refuse(e)
	}
	ss.mu.Lock()
	already := ss.pinned
	ss.pinned = true
	ss.mu.Unlock()
	if !already {
		ss.srv.pinned.Add(1)
		ss.entry.stats.pinnedClients.Add(1)
		ss.logger().Info("client pinned to its server connection", zap.String("reason", reason))
	}
	return false, nil
}

// refuse answers a Query with an error and ReadyForQuery without running
// it. With a server linked, the error must follow what the server still
// owes, so it is raised by the server itself.
func (ss *session) refuse(e *protocol.Error) (bool, error) {
	ss.mu.Lock()
	linked := ss.server != nil
	ss.dropUnsent() // (a query refused after applyState: no server for it)
	ss.mu.Unlock()
	ss.dropNotSent()
	ss.execTag = tagNone // (nor for a LISTEN's answer: listenLinked; nor a drop)
	if !linked {
		ss.joinPump()
		b := e.AppendFrame(ss.wr.Buffer())
		ss.wr.SetBuffer(protocol.AppendReadyForQuery(b, protocol.TxIdle))
		return true, ss.flushClientIfIdle()
	}
	sql := raiseSQL(e) // (before the locks: nothing but appends under them)
	var sc *pool.ServerConn
	for {
		var err error
		if sc, err = ss.link(false); err != nil {
			if err == errSkipToSync {
				return true, nil // (its server lost since the look above: skipped)
			}
			return true, err
		}
		ss.mu.Lock()
		if ss.stillLinked(sc) {
			break
		}
		ss.mu.Unlock()
	}
	ss.wmu.Lock()
	if ss.q.n == 0 && ss.queryStart.IsZero() {
		ss.queryStart = monoNow() // as process does: a query starts
	}
	ss.q.open = false // (a Query ends the implicit transaction, as in process)
	ss.q.push(expect{kind: kQuery})
	ss.q.ask()
	sc.Wr.SetBuffer(protocol.AppendQuery(sc.Wr.Buffer(), sql))
	ss.mu.Unlock()
	ss.flushServerIfIdle(sc)
	ss.wmu.Unlock()
	ss.relayInline(sc)
	return true, nil
}

// errReservedName refuses a statement that names a prepared statement in
// SQL by a name beginning with prepared.NamePrefix (classify's
// ReservedName): on a shared server connection it would run or drop a
// statement pgferry prepared there for another client, or take a name
// pgferry may give one. pg_prepared_statements shows their names. The
// SQLSTATE is insufficient_privilege rather than PostgreSQL's
// invalid_sql_statement_name (26000): the statement may exist, and a
// PREPARE of such a name is refused as well.
var errReservedName = protocol.NewError(protocol.SQLStateInsufficientPrivilege,
	`prepared statement names beginning with "`+prepared.NamePrefix+`" are reserved by pgferry`)

// raiseSQL is a statement that fails with e's SQLSTATE and message.
func raiseSQL(e *protocol.Error) string {
	return "DO $pgferry$BEGIN RAISE EXCEPTION USING ERRCODE = '" + e.Code + "', MESSAGE = '" +
		strings.ReplaceAll(e.Message, "'", "''") + "'; END$pgferry$"
}
