package router

import (
	"bytes"
	"encoding/binary"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

// Read routing. A transaction goes to a replica when the session is
// read-only (the database's readonly_alias, or default_transaction_read_only
// = on from the startup packet, options or SET SESSION CHARACTERISTICS),
// when it opens with BEGIN/START TRANSACTION ... READ ONLY, or, with
// route_read_statements, when it is a single autocommit statement that is
// plainly a read (see classify.IsPlainRead), and nothing but reads (and
// their Sync, in the extended protocol) is pipelined behind it
// (onlyReadQueriesFollow, onlyReadsFollow). Everything else, and every read within
// read_your_writes of the client's last write, goes to the primary, and so
// does a transaction a read-only session opens with BEGIN ... READ WRITE
// (beginsReadWrite), except on the alias, and the transaction of a request
// that pins the client (pinRefusal). In session mode, where a client
// keeps its first transaction's server, only alias sessions go to
// replicas.

// wantsReplica decides where the transaction that frame starts should run.
// It is called only when no server is linked.
func (ss *session) wantsReplica(typ byte, frame []byte) bool {
	e := ss.entry
	if e.monitor == nil {
		return false
	}
	if !ss.txnMode && !ss.readOnlyAlias {
		// Session mode: the server of the client's first transaction is
		// its server for life, so a read there would tie its later writes
		// to a replica (25006). Only an alias session, all of whose
		// transactions are reads, may have one.
		return false
	}
	ss.mu.Lock()
	lastWrite := mono(ss.lastWrite)
	roSession := ss.readOnlyAlias || ss.params.get(readOnlyParam) == "on"
	pinned := ss.pinned
	ss.mu.Unlock()
	if pinned && !ss.readOnlyAlias {
		// Pinned by this request (a client pinned earlier is linked):
		// the server it gets is its server for life, which must take
		// its writes too (pinRefusal).
		return false
	}
	if ryw := e.db.ReadYourWrites.Std(); !e.db.ReadYourWritesLSN && ryw > 0 && !lastWrite.IsZero() && since(lastWrite) < ryw {
		return false
	}
	var sql []byte
	switch typ {
	case protocol.MsgQuery:
		b := protocol.Body(frame)
		if len(b) > 0 {
			sql = b[:len(b)-1]
		}
	case protocol.MsgParse:
		_, rest, ok := protocol.CString(protocol.Body(frame))
		if ok {
			sql, _, _ = protocol.CString(rest)
		}
	case protocol.MsgBind:
		_, rest, ok := protocol.CString(protocol.Body(frame))
		if ok {
			if name, _, ok := protocol.CString(rest); ok && len(name) > 0 {
				if st := ss.stmts.lookup(name); st != nil {
					sql = st.Query()
				}
			} else if ok {
				sql = ss.stmts.unnamedQuery() // parsed in an earlier transaction
			}
		}
	}
	if roSession {
		// A session that reads by default may still ask for a transaction
		// that writes (BEGIN READ WRITE), which a replica refuses; an
		// alias session may not (pgferry refuses it: aliasWriteRefusal).
		return ss.readOnlyAlias || !beginsReadWrite(sql)
	}
	if sql == nil {
		return false
	}
	if classify.BeginsReadOnly(sql) {
		return true
	}
	if !e.db.RouteReadStatements || !classify.IsPlainRead(sql) {
		return false
	}
	if typ == protocol.MsgQuery {
		return ss.onlyReadQueriesFollow()
	}
	return ss.onlyReadsFollow(typ, frame)
}

// beginsReadWrite reports whether sql starts with BEGIN or START
// TRANSACTION whose modes include READ WRITE (the words may be separated
// by any space or comments, and written in any case). It is asked only for
// sessions that read by default: a yes sends the transaction to the
// primary, where the session's default still applies to its reads.
func beginsReadWrite(sql []byte) bool {
	var prev []byte
	w, rest := sqlWord(sql)
	for n := 0; len(w) > 0; n++ {
		switch {
		case n == 0 && !isWord(w, "begin") && !isWord(w, "start"):
			return false
		case n == 1 && isWord(prev, "start") && !isWord(w, "transaction"):
			return false
		case w[0] == ';':
			return false // the BEGIN ends here
		case isWord(prev, "read") && isWord(w, "write"):
			return true
		}
		prev = w
		w, rest = sqlWord(rest)
	}
	return false
}

func isWord(w []byte, s string) bool { return bytes.EqualFold(w, []byte(s)) }

// sqlWord returns the first word of b (letters, digits and underscores)
// or a ";", skipping space, other punctuation and comments, and what
// follows it. The word is empty at the end of b, and at a quote or dollar
// sign, which no BEGIN holds.
func sqlWord(b []byte) (word, rest []byte) {
	for len(b) > 0 {
		c := b[0]
		switch {
		case c == '-' && len(b) > 1 && b[1] == '-':
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return nil, nil
			}
			b = b[i+1:]
		case c == '/' && len(b) > 1 && b[1] == '*':
			// PostgreSQL's block comments nest.
			depth, i := 1, 2
			for ; i < len(b) && depth > 0; i++ {
				switch {
				case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
					depth, i = depth+1, i+1
				case b[i] == '*' && i+1 < len(b) && b[i+1] == '/':
					depth, i = depth-1, i+1
				}
			}
			b = b[i:]
		case c == ';':
			return b[:1], b[1:]
		case c == '\'' || c == '"' || c == '$':
			return nil, nil
		case c == '_' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z':
			i := 1
			for i < len(b) && (b[i] == '_' || '0' <= b[i] && b[i] <= '9' || 'a' <= b[i]|0x20 && b[i]|0x20 <= 'z') {
				i++
			}
			return b[:i], b[i:]
		default:
			b = b[1:]
		}
	}
	return nil, nil
}

// onlyReadQueriesFollow is onlyReadsFollow for a simple Query: what the
// client sent behind it runs on the same server, so it may be simple
// Queries of plain reads and a Terminate, or nothing.
func (ss *session) onlyReadQueriesFollow() bool {
	for b := ss.rd.Lookahead(); len(b) > 0; {
		f, rest, ok := nextFrame(b)
		if !ok {
			return false
		}
		b = rest
		switch f[0] {
		case protocol.MsgTerminate:
		case protocol.MsgQuery:
			if body := protocol.Body(f); len(body) == 0 || !classify.IsPlainRead(body[:len(body)-1]) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// onlyReadsFollow reports whether what the client sent behind frame, a
// Parse or Bind of a plain read, is reads up to a Sync that ends what it
// sent: the frames behind it run on the server it starts (a server stays
// linked while answers are owed), so a write pipelined behind a read (a
// pgx batch, a postgres.js pipeline) would otherwise run on the replica,
// and fail there. Behind it may come Parses of plain reads, Binds of
// plain reads (the client's prepared statements, or the one just parsed),
// Describe, Execute, Close and Flush. A Sync not here yet, anything after
// it, or anything else sends the transaction to the primary.
func (ss *session) onlyReadsFollow(typ byte, frame []byte) bool {
	var parsed []byte // the name of the last statement parsed here
	if typ == protocol.MsgParse {
		parsed, _, _ = protocol.CString(protocol.Body(frame))
	}
	b := ss.rd.Lookahead()
	for {
		f, rest, ok := nextFrame(b)
		if !ok {
			return false
		}
		b = rest
		switch f[0] {
		case protocol.MsgSync:
			return len(b) == 0
		case protocol.MsgDescribe, protocol.MsgExecute, protocol.MsgClose, protocol.MsgFlush:
		case protocol.MsgParse:
			name, rest, ok := protocol.CString(protocol.Body(f))
			if !ok {
				return false
			}
			if sql, _, ok := protocol.CString(rest); !ok || !classify.IsPlainRead(sql) {
				return false
			}
			parsed = name
		case protocol.MsgBind:
			_, rest, ok := protocol.CString(protocol.Body(f))
			name, _, ok2 := protocol.CString(rest)
			if !ok || !ok2 {
				return false
			}
			if parsed != nil && bytes.Equal(name, parsed) {
				break // checked at its Parse
			}
			var sql []byte
			if len(name) == 0 {
				sql = ss.stmts.unnamedQuery()
			} else if st := ss.stmts.lookup(name); st != nil {
				sql = st.Query()
			}
			if sql == nil || !classify.IsPlainRead(sql) {
				return false
			}
		default:
			return false
		}
	}
}

// pickPool returns the pool for the next transaction: a replica in rotation
// (least loaded relative to its weight) when the transaction is a read,
// else the primary. With replica_fallback = "error", a read with no replica
// in rotation fails instead of using the primary.
func (ss *session) pickPool(readOnly bool) (*pool.Pool, bool, error) {
	e := ss.entry
	if ss.readOnlyAlias {
		ss.keepAliasReadOnly()
	}
	if !readOnly || e.monitor == nil {
		return e.pool, false, nil
	}
	var mustReplay uint64 // read_your_writes_lsn: the client's last commit
	if e.db.ReadYourWritesLSN {
		ss.mu.Lock()
		mustReplay = ss.lastWrite
		ss.mu.Unlock()
	}
	best, bestLoad := -1, 0.0
	for _, i := range e.monitor.InRotation() {
		if mustReplay != 0 && !e.monitor.ReplayedPast(i, mustReplay) {
			continue
		}
		r := e.replicas[i]
		st := r.pool.Stat()
		w := float64(max(r.weight, 1))
		load := float64(st.Active+st.Waiting) / w
		if best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	if best >= 0 {
		return e.replicas[best].pool, true, nil
	}
	if mustReplay != 0 {
		// No replica has the client's writes yet: the primary has.
		return e.pool, false, nil
	}
	if e.db.ReplicaFallback == "error" {
		return nil, false, protocol.NewError(protocol.SQLStateConnectionFailure,
			"no replica of database "+ss.database+" is within max_replica_lag; replica_fallback = error")
	}
	return e.pool, false, nil
}

// readOnlyParam is the parameter that makes a server refuse a session's
// writes itself (25006).
const readOnlyParam = "default_transaction_read_only"

// keepAliasReadOnly holds a readonly_alias session's own
// default_transaction_read_only at on, as login recorded it, for the
// loan about to begin: syncParams sets it on whichever server runs the
// transaction, and the server refuses its writes itself, on the primary
// too (replica_fallback = "primary", a replica promoted before the lag
// monitor's next probe). pgferry refuses the client's own RESET, RESET
// ALL, DISCARD ALL or SET of it (aliasWriteRefusal). The next client of the server gets its own value back
// (syncParams: the server's default unless it set one).
func (ss *session) keepAliasReadOnly() {
	ss.mu.Lock()
	if ss.params.get(readOnlyParam) != "on" {
		ss.setParam(readOnlyParam, "on")
		ss.paramsDirty = true
	}
	ss.mu.Unlock()
}

// aliasWriteRefusal is the error that refuses a simple Query of a
// readonly_alias session that would let it write (classify.LiftsReadOnly:
// BEGIN READ WRITE, a SET or RESET of default_transaction_read_only, RESET
// ALL, ...), or nil. keepAliasReadOnly sets the parameter at each loan,
// but the primary (replica_fallback = "primary", a promoted replica) runs
// what follows such a statement in the same loan, or the same query
// ("SET default_transaction_read_only = off; COMMIT; INSERT ..."), as
// the client asks: so none of it runs, anywhere.
func (ss *session) aliasWriteRefusal(frame []byte) *protocol.Error {
	body := protocol.Body(frame)
	if len(body) == 0 {
		return nil
	}
	if what := classify.LiftsReadOnly(body[:len(body)-1]); what != "" {
		return aliasWriteError(ss.database, what)
	}
	return nil
}

// refuseAliasParse is aliasWriteRefusal for a Parse: the statement
// becomes one that raises the error when it is executed, so that it
// comes in order, from the server (as pinRefusal's do). The client's
// parameter types stay, so that a Bind with its arguments reaches the
// error. It returns the frame to relay.
func (ss *session) refuseAliasParse(frame []byte) []byte {
	name, rest, ok := protocol.CString(protocol.Body(frame))
	if !ok {
		return frame
	}
	sql, types, ok := protocol.CString(rest)
	if !ok {
		return frame
	}
	what := classify.LiftsReadOnly(sql)
	if what == "" {
		return frame
	}
	e := aliasWriteError(ss.database, what)
	return protocol.AppendParseRaw(nil, string(name), append([]byte(raiseSQL(e)+"\x00"), typedParams(sql, types)...))
}

// typedParams is a Parse's parameter types for the DO statement that
// takes its place, which uses none of them: as many as sql, the client's
// statement, has (those it refers to beyond the types declared, whose
// types PostgreSQL was to infer: classify.ParamCount), each one the client
// left to the server (OID 0, or not declared) text. So the DO parses
// (PostgreSQL refuses a Parse with a parameter whose type it could not
// determine: 42P18, postgres.c exec_parse_message), and the client's Bind
// with its arguments reaches the DO's error, not one about their number
// (08P01). types is not changed.
func typedParams(sql, types []byte) []byte {
	const textOID = 25
	declared := 0
	if len(types) >= 2 {
		declared = int(binary.BigEndian.Uint16(types))
	}
	if len(types) < 2+4*declared {
		return types // (malformed: the server says so)
	}
	n := max(declared, min(classify.ParamCount(sql), 65535))
	out := make([]byte, 2+4*n)
	binary.BigEndian.PutUint16(out, uint16(n))
	for i := range n {
		oid := uint32(0)
		if i < declared {
			oid = binary.BigEndian.Uint32(types[2+4*i:])
		}
		if oid == 0 {
			oid = textOID
		}
		binary.BigEndian.PutUint32(out[2+4*i:], oid)
	}
	return out
}

// aliasWriteError is the ERROR that refuses what (a statement, as
// classify.LiftsReadOnly names it) to a session on the readonly_alias
// database: read_only_sql_transaction, as a replica refuses a write.
func aliasWriteError(database, what string) *protocol.Error {
	return protocol.NewError(protocol.SQLStateReadOnlySQLTransaction,
		"cannot run "+what+" in a session of "+database+", a read-only database (readonly_alias): it would let the session write")
}

// nextFrame splits the first frame off b, the bytes a client sent; ok is
// false when b does not start with a whole frame (not all of it came yet).
func nextFrame(b []byte) (f, rest []byte, ok bool) {
	if len(b) < 5 {
		return nil, b, false
	}
	n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
	if n < 5 || n > len(b) {
		return nil, b, false
	}
	return b[:n], b[n:], true
}
