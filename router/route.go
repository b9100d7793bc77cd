package router

import (
	"bytes"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// Read routing. A transaction goes to a replica when the session is
// read-only (the database's readonly_alias, or default_transaction_read_only
// = on from the startup packet, options or SET SESSION CHARACTERISTICS),
// when it opens with BEGIN/START TRANSACTION ... READ ONLY, or, with
// route_read_statements, when it is a single autocommit statement that is
// plainly a read (see isPlainRead). Everything else, and every read within
// read_your_writes of the client's last write, goes to the primary.

// wantsReplica decides where the transaction that frame starts should run.
// It is called only when no server is linked.
func (ss *session) wantsReplica(typ byte, frame []byte) bool {
	e := ss.entry
	if e.monitor == nil {
		return false
	}
	ss.mu.Lock()
	lastWrite := ss.lastWrite
	roSession := ss.readOnlyAlias || ss.params.get("default_transaction_read_only") == "on"
	ss.mu.Unlock()
	if ryw := e.db.ReadYourWrites.Std(); ryw > 0 && !lastWrite.IsZero() && time.Since(lastWrite) < ryw {
		return false
	}
	if roSession {
		return true
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
				if st := ss.stmts[string(name)]; st != nil {
					sql = st.Query()
				}
			}
		}
	}
	if sql == nil {
		return false
	}
	if beginsReadOnly(sql) {
		return true
	}
	return e.db.RouteReadStatements && isPlainRead(sql)
}

// beginsReadOnly reports BEGIN or START TRANSACTION with READ ONLY among
// its modes (any isolation level).
func beginsReadOnly(sql []byte) bool {
	w, rest := nextWord(sql)
	switch w {
	case "begin":
	case "start":
		w2, r2 := nextWord(rest)
		if w2 != "transaction" {
			return false
		}
		rest = r2
	default:
		return false
	}
	stmt, _ := splitStatement(rest)
	low := bytes.ToLower(stmt)
	return bytes.Contains(low, []byte("read only")) && !bytes.Contains(low, []byte("read write"))
}

// writingFunctions may write or depend on session state; a statement
// calling one is never routed to a replica.
var writingFunctions = [][]byte{
	[]byte("nextval"), []byte("setval"), []byte("currval"), []byte("lastval"),
	[]byte("advisory"), []byte("lo_"), []byte("txid_current"), []byte("pg_current_xact_id"),
	[]byte("pg_notify"), []byte("set_config"), []byte("dblink"), []byte("pg_terminate_backend"),
	[]byte("pg_cancel_backend"), []byte("pg_reload_conf"), []byte("pg_switch_wal"),
	[]byte("replication_slot"), []byte("pg_create"), []byte("pg_drop"),
}

// writingKeywords in any position make a statement uncertain.
var writingKeywords = []string{"insert", "update", "delete", "merge", "into", "for", "lock", "call", "do", "copy"}

// isPlainRead is the route_read_statements rule: exactly one statement,
// starting with SELECT, or WITH ... SELECT; no INSERT/UPDATE/DELETE/MERGE,
// SELECT INTO, FOR UPDATE/SHARE (any locking clause), LOCK, CALL, DO or
// COPY keyword anywhere; and no call of a function known to write or to
// read session state (writingFunctions). Anything else goes to the
// primary. Function calls not on the list are assumed to be reads: mark
// writing transactions explicitly or keep route_read_statements off.
func isPlainRead(sql []byte) bool {
	stmt, rest := splitStatement(sql)
	if len(skipSpace(rest)) > 0 {
		return false
	}
	w, _ := nextWord(stmt)
	if w != "select" && w != "with" {
		return false
	}
	low := bytes.ToLower(stmt)
	for _, f := range writingFunctions {
		if bytes.Contains(low, f) {
			return false
		}
	}
	// Scan the words outside quotes for writing keywords.
	b := low
	for len(b) > 0 {
		b = skipSpace(b)
		if len(b) == 0 {
			break
		}
		switch b[0] {
		case '\'', '"':
			j := bytes.IndexByte(b[1:], b[0])
			if j < 0 {
				return false
			}
			b = b[j+2:]
			continue
		}
		word, r := nextWord(b)
		if word == "" {
			b = b[1:]
			continue
		}
		for _, k := range writingKeywords {
			if word == k {
				return false
			}
		}
		b = r
	}
	return true
}

// pickPool returns the pool for the next transaction: a replica in rotation
// (least loaded relative to its weight) when the transaction is a read,
// else the primary. With replica_fallback = "error", a read with no replica
// in rotation fails instead of using the primary.
func (ss *session) pickPool(readOnly bool) (*pool.Pool, bool, error) {
	e := ss.entry
	if !readOnly || e.monitor == nil {
		return e.pool, false, nil
	}
	best, bestLoad := -1, 0.0
	for _, i := range e.monitor.InRotation() {
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
	if e.db.ReplicaFallback == "error" {
		return nil, false, protocol.NewError(protocol.SQLStateConnectionFailure,
			"no replica of database "+ss.database+" is within max_replica_lag; replica_fallback = error")
	}
	return e.pool, false, nil
}
