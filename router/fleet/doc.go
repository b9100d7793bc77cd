// Package fleet keeps a fleet of peered pgferry instances within one server
// connection budget (fleet_max_db_connections, fleet_max_user_connections).
//
// # Links and reports
//
// Every instance opens one TCP link to every address in its peer list (the
// [peers] entries, or every address peers_dns resolves to) on the peers'
// client port, and answers on the links others open to it. Only reports on
// links it dialed count: an accepted link could come from anyone, so its
// reports only earn it this instance's reports in return and, from an
// address not in the list, a fresh DNS lookup (at most one per interval),
// so a new peer is dialed within a round trip of its first link rather than
// at the next peers_dns_interval. Every instance must therefore list every
// other, as a headless Service does. A link starts
// with an 8-byte packet in the place of a startup packet, with the request
// code PeerLinkCode ("pgfr"), then carries length-prefixed JSON reports in
// both directions: the sender's peer id and nonce (random per process: the
// nonce, not the peer id, tells instances apart, so a duplicate peer_id or
// a restart with the same id is counted right), its view (the nonces of
// itself and of the peers it heard from within three intervals), and for
// each budget the cap it holds itself to and the connections it has open or
// is opening. A report is sent at once when it changes and at least every
// interval as a heartbeat. A link to oneself (a headless Service lists
// every pod, this one too) is noticed by the nonce and closed.
//
// # Shares
//
// For a budget B, each instance computes its cap from what it last heard:
//
//   - members: itself, the live peers it hears, and every id in their
//     views, less the peers that report they are leaving;
//   - held: the connections of leaving and silent peers (counted until
//     they are gone), and for every other peer the larger of its cap and
//     its open connections;
//   - cap = min(fair share of (B − held by leavers) among the members,
//     B − held by everyone else).
//
// The fair share is (B − held)/members, one more for the lowest nonces while
// the remainder lasts. It only falls as the member set grows or an
// instance's rank in it rises, so instances whose member sets each contain
// every live instance never sum past B, even when the sets differ (a peer
// gone for one and not yet for another). A newcomer is in every set once it
// is acknowledged (below). The second term makes a newcomer wait for the others to
// shrink: it opens connections only as they report them closed. Until an
// instance has heard from every peer in its list once (or three intervals
// passed), while a peer it hears does not yet list it, and while a member
// it knows of only from another's view has not reported to it, it does not
// grow (its cap stays at what it has open). Caps are applied through
// pool.Limit.SetMax, which closes idle connections over a lowered cap and
// lent ones as they come back.
//
// # Ownership
//
// One goroutine, started by Start, owns all state: reports from links,
// dial results, resolved peer lists and the leave request reach it as
// events on one channel; new budgets wait in a list that Track fills (it
// runs under the router's lock and must not block) and a wake-up channel;
// Stop closes done, after which the owner drains what was posted. Each link has a reader and a
// writer goroutine; the writer sends the latest report (a newer one
// replaces an unsent one). Stop ends them all and waits.
//
// # Limits of the guarantee
//
// The sum stays within B while instances can reach each other. A peer
// that stops answering is counted with its last report for three
// intervals, then dropped: a network partition lets both sides grow after
// that (availability over consistency, as documented in operations.md). A
// crashed instance's server backends end when the server notices the
// closed socket: idle ones at once, busy ones when their query ends.
// Links carry no credentials, so the trust is in the peer list: whoever
// answers at a listed address (or controls the DNS name) is a peer. Reports
// with negative counts are refused and claims are capped at the budget.
// Accepted links from addresses not in the list are bounded (1,024, 4 per
// address); listed peers are always let in. An instance that cannot link
// to its listed peers at all becomes ready alone after three intervals and
// takes the whole budget: keep the port inside the fleet's network, as for
// cancel forwarding. A dialed link to a peer that left the list (a pod
// shutting down leaves DNS) stays while the peer still reports.
package fleet
