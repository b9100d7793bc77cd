// Fault injection for tests: named points where a test can make a session
// panic (or wait), to show what pgferry does with a bug there.

package router

import "sync/atomic"

// fault, set only by tests (SetFault and its kin in export_test.go), runs
// at every point a session passes faultAt; nil otherwise.
var fault atomic.Pointer[func(ss *session, where string)]

// faultAt runs fault, if a test set one, at the point named where:
//   - "turn": the start of a relay loop turn of a logged-in session;
//   - "evicting": the relay loop about to hand a session back to a
//     goroutine (evict);
//   - "evict", "evict flush", "leave", "login": on the goroutine the relay
//     loop hands a session or a login to (see SetLoopHandbackFault);
//   - "process": a client request about to go to the server, mu and wmu
//     held (send; closeLocally's Close in its place);
//   - "local": a Close of one of the client's named statements, or a
//     simple Query that is a DEALLOCATE of one, about to be looked at with
//     no lock held, before pgferry answers it itself if no server is
//     linked (closeLocally, deallocQuery);
//   - "server frame": a server frame other than a data row, a notice or
//     copy data, about to be noted, mu held (relayServer; in the relay
//     loop, not a frame of a simple query's answer that changes nothing,
//     which is relayed without mu);
//   - "reattach": a parked session's descriptor made a net.Conn again,
//     which the session does not hold yet (reattach);
//   - "ending login": a login on the relay loop the loop let go of
//     (unloop), before its client is told and let go of (endLogin);
//   - "handing off login": the relay loop about to hand a login to a
//     goroutine (loginHandoff);
//   - "settling": the sweep about to park an idle session of the relay
//     loop (settle);
//   - "expiring": the sweep about to end a login or a queued session of
//     the relay loop past its timeout (expire);
//   - "adopting": the relay loop about to serve a parked session whose
//     client spoke (adopt);
//   - "tls": a client's TLS handshake done, before its startup packet
//     (on the session's goroutine);
//   - "lent": a server the pool lent after a wait (waitForServer) or to
//     a session the relay loop queued (takeGrant), not linked yet
//     (attach);
//   - "granted": that server linked (attach), the request the session
//     waited with not sent to it yet.
//
// It costs one atomic load when no test set one.
func (ss *session) faultAt(where string) {
	if f := fault.Load(); f != nil {
		(*f)(ss, where)
	}
}
