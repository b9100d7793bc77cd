// A Parse of a statement name the client holds already: PostgreSQL
// refuses it (42P05, prepare.c StorePreparedStatement), skips to the Sync
// and keeps the statement the name stood for.

package router

import (
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// PostgreSQL refuses a Parse of a name it holds (only the unnamed
// statement is replaced), after it parsed and analysed the query
// (postgres.c, exec_parse_message): a syntax error, a missing table, or
// 25P02 in a failed transaction (but for COMMIT, ROLLBACK and their kind)
// come first. The client's names are not the server's, so pgferry has the
// server refuse the Parse itself, in order: a Close of dupStmt and a Parse
// of the client's query under it, whose answers are swallowed, and the
// same Parse again, which the server refuses with 42P05 (or the first
// with the query's own error), so that it skips to the Sync as PostgreSQL
// would, in either relay mode and whatever the client sent behind it.
// The error's message names dupStmt; the client gets it naming its own
// statement (duplicateError). dupStmt is left on the server, closed before
// its next use; no client reaches it (a name of pgferry's form).
//
// Whether the client holds the name is known when the Parse goes: one of
// a name whose Parse, Close or drop is still unanswered past the end of
// its run waits for that answer (stmtswait.go), as a Bind of it does;
// within the run, the server skips the Parse if what came before it did
// not run.

// dupStmt names the server's statement that a duplicate Parse fails on.
const dupStmt = prepared.NamePrefix + "duplicate"

// pendingDup is a duplicate Parse sent and perhaps not answered yet: the
// number of the request the server refuses (ring.seq) and the client's
// statement name.
type pendingDup struct {
	seq  uint64
	name string
}

// sendDuplicate sends, for the client's Parse of name, a statement it
// holds, with body (after the name), the Parses of dupStmt that the server
// refuses as PostgreSQL refuses the client's (see above). mu is held.
func (ss *session) sendDuplicate(sc *pool.ServerConn, name, body []byte) {
	ss.q.push(expect{kind: kCloseSwallow})
	b := protocol.AppendClose(sc.Wr.Buffer(), 'S', dupStmt)
	ss.q.push(expect{kind: kParseSwallow})
	b = protocol.AppendParseRaw(b, dupStmt, body)
	ss.q.push(expect{kind: kParse, tag: tagDup})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(b, dupStmt, body))
	t := ss.stmts
	t.dups = answeredDups(t.dups, ss.q.answered())
	t.dups = append(t.dups, pendingDup{seq: ss.q.seq, name: string(name)})
}

// answeredDups returns dups without those answered (up to request
// answered), which the server refused, skipped, or never answered.
func answeredDups(dups []pendingDup, answered uint64) []pendingDup {
	i := 0
	for i < len(dups) && dups[i].seq <= answered {
		i++
	}
	if i == 0 {
		return dups
	}
	n := copy(dups, dups[i:])
	clear(dups[n:])
	return dups[:n]
}

// duplicateError returns the server's error in answer to the Parse of
// dupStmt that sendDuplicate sent last, the request at the head of the
// ring, as the client's: naming the client's statement. mu is held.
func (ss *session) duplicateError(frame []byte) []byte {
	if t := ss.stmts; t != nil {
		seq := ss.q.answered() + 1
		for _, d := range t.dups {
			if d.seq == seq {
				return protocol.RenameInError(nil, frame, dupStmt, d.name)
			}
		}
	}
	return frame
}
