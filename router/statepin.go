// Pinning for session state pgferry cannot carry: the reason a statement
// pins its client, or is refused with pin_on_session_state = false.

package router

import (
	"strings"

	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

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

// pinSetValue is the pin reason of a SET of a tracked parameter whose
// value pgferry cannot replay.
func pinSetValue(name string) string {
	return "SET " + name + " to a value pgferry cannot replay"
}

// pinRefusal is the error that refuses a statement that would pin the
// client for reason, or nil when the client may be pinned. With
// pin_on_session_state = false every pin is refused. A client whose
// transaction runs on a read replica (one routed there as a read: BEGIN
// READ ONLY, default_transaction_read_only, route_read_statements) is
// refused one there: pinned, every later transaction of the client would
// run on the replica and its writes fail (25006), and ending the loan
// instead would silently lose what the statement keeps on the replica (a
// lock, a temporary table). A readonly_alias session, all of whose
// transactions are reads, may be pinned on a replica. A client with no
// server linked yet is pinned before one is chosen, and wantsReplica
// gives it the primary. mu is not held.
func (ss *session) pinRefusal(reason string) *protocol.Error {
	if !ss.pinOnState {
		return protocol.NewError(protocol.SQLStateFeatureNotSupported,
			reason+" is not supported in transaction pooling mode: it would outlive the transaction on a shared server connection")
	}
	ss.mu.Lock()
	onReplica := ss.server != nil && ss.onReplica && !ss.readOnlyAlias
	ss.mu.Unlock()
	if onReplica {
		return protocol.NewError(protocol.SQLStateFeatureNotSupported,
			reason+" would tie this client to a read replica for the rest of its session; run it outside a read-only transaction")
	}
	return nil
}
