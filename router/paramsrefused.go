// A replay the server refuses: the client's requests sent behind it fail
// rather than run with what the server held.

package router

import (
	"errors"
	"strings"
	"unique"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// A value the client set, which PostgreSQL accepted then, may be refused
// when pgferry restores it on another server connection (syncParams): a
// text search configuration or tablespace it names was dropped since, a
// permission revoked. PostgreSQL undoes the whole query then, and the
// server keeps what it held, perhaps another client's search_path. The
// client's request goes right behind the replay, without waiting for its
// answer, so the replay is written to stop it there:
//
//   - its SETs run BEGIN to COMMIT, so that a refusal leaves the server
//     inside an aborted transaction, where PostgreSQL runs no statement
//     but one that ends it (25P02);
//   - each request sent before the replay's answer comes goes behind a
//     guard, a Parse (and a Close) of a statement of pgferry's, which the
//     aborted transaction refuses too (25P02; postgres.c,
//     exec_parse_message, takes an empty statement there). PostgreSQL
//     then skips every message up to the next Sync (ignore_till_sync), a
//     COMMIT or ROLLBACK of the client's included, which would otherwise
//     end the aborted transaction and run what follows it. A Query or
//     FunctionCall gets a Sync of pgferry's behind it, whose
//     ReadyForQuery is dropped unless the guard failed. The Parse begins
//     the transaction the client's request runs in: its statement, a
//     SHOW, unlike a SELECT, takes no snapshot, so that a BEGIN
//     ISOLATION LEVEL behind it still sets the transaction's, and VACUUM
//     still runs.
//
// The client gets, for each such request, in its place, an ERROR with the
// server's SQLSTATE that names the parameter, then ReadyForQuery 'I';
// pgferry forgets the client's value of that parameter (the server's
// default from then on: the client is told so; keeping it would fail
// every request, the client's own SET of it included, which runs behind
// the replay), and once every request is answered it closes the server
// connection, inside its aborted transaction, and the client's next
// request goes to another one with the rest of its values (endRefused).
// PgBouncer waits for its SET's answer before it sends the client's
// query, a round trip per replay, and closes the client if it fails.

// replayRefused is session.replays once the server refused a replay.
const replayRefused = ^uint8(0)

// guardName names the statement of guardReplay's Parse: pgferry gives no
// statement that name (prepared.NamePrefix and base-36 digits), and no
// client may use it (errReservedName).
const guardName = prepared.NamePrefix + "replay_guard"

// readyIdle answers a request that did not run after a refused replay:
// the client is idle, as before it.
var readyIdle = protocol.AppendReadyForQuery(nil, protocol.TxIdle)

// guardSQL is the guard's statement, never executed.
const guardSQL = "SHOW server_version"

// noParamTypes is a Parse's count of parameter types: none.
var noParamTypes = []byte{0, 0}

// guardReplay puts a guard in front of a request sent before the server
// answered the replay (see above). mu and wmu are held.
func (ss *session) guardReplay(sc *pool.ServerConn) {
	ss.q.push(expect{kind: kGuard})
	ss.q.push(expect{kind: kCloseSwallow})
	b := protocol.AppendParse(sc.Wr.Buffer(), guardName, guardSQL, noParamTypes)
	sc.Wr.SetBuffer(protocol.AppendClose(b, 'S', guardName))
}

// syncBehind sends a Sync of pgferry's behind a Query or FunctionCall
// sent behind a guard: if the guard fails, the server skips to it. Not
// behind one sent inside a group of extended-protocol messages (ring.open:
// one went since the last Sync or simple Query): an error in the group
// before it has the server skip the Query, and what follows it, up to the
// client's Sync (postgres.c, ignore_till_sync), and pgferry's Sync would
// end the skip there, its ReadyForQuery the client's for the Query,
// and the rest of the group run. There a failed guard has the server skip
// up to the client's Sync too, as after any error in the group, and the
// client gets the refusal for the group. mu and wmu are held.
func (ss *session) syncBehind(sc *pool.ServerConn) {
	ss.q.push(expect{kind: kSyncSwallow})
	sc.Wr.SetBuffer(protocol.AppendEmpty(sc.Wr.Buffer(), protocol.MsgSync))
}

// replayRefusedBy follows the server's refusal (code, msg) of a replay
// query on sc: the parameter its failing statement set is named (the
// statements before it completed: sc.ReplayRan), the client's value of
// it forgotten, and the answer to the client's requests made. The server
// holds what it held before, not what sc.Params says: every tracked
// parameter is marked unknown there. mu is held.
func (ss *session) replayRefusedBy(sc *pool.ServerConn, code, msg []byte) {
	if ss.replays == replayRefused {
		return // (its second query, refused by the aborted transaction)
	}
	ss.replays = replayRefused
	var k string
	if sc.ReplayRan >= 0 && sc.ReplayRan < len(sc.Replay) {
		k = sc.Replay[sc.ReplayRan]
	}
	sc.ReplayRan = -1 // (inside the aborted transaction: releaseServer closes it)
	for _, pk := range ss.paramKeys {
		sc.Params[pk] = paramUnknown
	}
	sc.ParamsKey = unique.Handle[string]{}
	e := protocol.NewError(string(code), "pgferry could not restore the session's parameters on a server connection: "+string(msg))
	e.Detail = "The request did not run."
	var b []byte
	if k != "" && ss.tracks(k) && !replayInterrupted(code) {
		if v, ok := ss.params.lookup(k); ok {
			if !strings.HasPrefix(v, rawValuePrefix) {
				// (A startup value, perhaps: the next login with it
				// tries it at login again.)
				ss.entry.confirmed.forget(gucName(k), v)
			}
			ss.params.del(k)
			ss.paramsDirty = true
			if def, reported := ss.entry.welcome[k]; reported {
				b = protocol.AppendParameterStatus(b, k, def)
			}
		}
		e.Message = `pgferry could not restore parameter "` + k + `" on a server connection: ` + string(msg)
		e.Detail = "The request did not run. The parameter has its default value in this session from now on."
	}
	ss.ensureRareLocked().refusal = e.AppendFrame(b)
	ss.logger().Warn("the server refused the client's session parameters; its requests on that server connection fail",
		zap.String("parameter", k), zap.ByteString("sqlstate", code), zap.ByteString("message", msg))
}

// replayInterrupted reports whether code, the SQLSTATE of the replay's
// failure, says the replay was stopped rather than its value refused: a
// cancel (the client's, statement_timeout left by another client), a
// deadlock or serialization failure, a lock_timeout, a lack of resources,
// the server going away (classes 57, 40, 53, 58 and 55P03). The value
// the server did not look at is kept, as PostgreSQL keeps a session's
// values when a statement is cancelled.
func replayInterrupted(code []byte) bool {
	if len(code) != 5 {
		return false
	}
	switch string(code[:2]) {
	case "57", "40", "53", "58":
		return true
	}
	return string(code) == "55P03" // lock_not_available
}

// endRefused ends a loan whose replay the server refused, once the server
// answered every request sent on it, with frame (nil: none) the last
// answer to the client: the server, inside the transaction the refusal
// aborted, is closed (releaseServer), and the client, idle, goes on; its
// next request links another. A client pinned in this loan is no longer:
// nothing it sent ran, the statement that pinned it included (a pinned
// client links a server only once, as it pins). mu is held; endRefused
// lets go of it.
func (ss *session) endRefused(sc *pool.ServerConn, frame []byte, end mono) relayEnd {
	ss.replays = 0
	ss.rare.refusal = nil
	ss.server = nil
	ss.status = protocol.TxIdle
	ss.pumpKick, ss.releaseDeferred = false, false
	unpinned := ss.pinned
	ss.pinned = false
	ss.mu.Unlock()
	if unpinned {
		ss.entry.stats.pinnedClients.Add(-1)
	}
	if frame != nil {
		ss.wr.Append(frame)
	}
	ss.releaseServer(sc, false, end)
	return relayUnlinked
}

// A guard fails in any aborted transaction, the client's own too: a
// request sent behind one that failed inside the client's transaction
// (BEGIN; SELECT 1/0; then ROLLBACK, each to its Sync, sent at once)
// would be skipped with it, its ROLLBACK or COMMIT not run, where
// PostgreSQL runs it. So only the first request of the loan goes before
// the server answered the replay, behind its guard (the client is idle
// there: no transaction of its own to fail); the next one waits for that
// answer (awaitReplay), and then goes with no guard if the replay ran, or
// behind one that fails for the refusal if it did not. It costs a round
// trip only to a pipeline sent at the start of a loan that replays.

// errAwaitReplay is send's report that the frame begins a request that
// must wait for the server's answer to the replay (awaitReplay).
var errAwaitReplay = errors.New("the replay's answer first")

// awaitsReplay reports whether a frame of type typ begins a request that
// must wait for the replay's answer: the server has not answered it yet,
// and a request went behind a guard already (its guard is still owed).
// mu is held, or the relay loop owns the session.
func (ss *session) awaitsReplay(typ byte) bool {
	q := &ss.q
	if ss.replays == 0 || ss.replays == replayRefused || q.open || typ == protocol.MsgSync {
		return false
	}
	for i := range q.n {
		if q.buf[(q.head+i)%len(q.buf)].kind == kGuard {
			return true
		}
	}
	return false
}

// awaitReplay waits until the server linked as sc answered the replay, or
// sc is no longer linked (send then looks again): what went to sc is
// flushed first, and the answers are relayed by the session goroutine
// itself while the loan is inline, up to the replay's (relayServer stops
// there: replayAnswered), else by the pump, which wakes it there or by
// its exit. The replay is the loan's first query: its answer comes after
// one round trip.
func (ss *session) awaitReplay(sc *pool.ServerConn) {
	ss.wmu.Lock()
	sc.Wr.Flush() // (a failure is the relay's to see)
	ss.wmu.Unlock()
	ss.mu.Lock()
	if ss.server != sc || ss.replays == 0 || ss.replays == replayRefused {
		ss.mu.Unlock()
		return
	}
	wake := make(chan struct{})
	ss.ensureRareLocked().replayWait = wake
	pump := ss.pumpDone
	if ss.inline || pump == nil {
		ss.mu.Unlock()
		if ss.relayServer(sc, true) == relayHandoff {
			ss.handOff(sc)
		}
	} else {
		ss.mu.Unlock()
		select {
		case <-wake:
		case <-pump:
		}
	}
	ss.mu.Lock()
	ss.rare.replayWait = nil
	ss.mu.Unlock()
}

// replayAnswered wakes a request waiting for the replay's answer
// (awaitReplay), which just came, and reports whether one waited. mu is
// held.
func (ss *session) replayAnswered() bool {
	if ss.rare == nil || ss.rare.replayWait == nil {
		return false
	}
	close(ss.rare.replayWait)
	ss.rare.replayWait = nil
	return true
}
