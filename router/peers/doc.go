// Package peers is what lets several pgferry (or PgBouncer) instances
// behind one address honour each other's cancel requests: the peer id and
// TTL stamped into the cancel keys an instance hands out (Stamp, IDOf,
// TTLMask), the instance's peers as its configuration names them, with a
// cache of what peers_dns resolves to (Set), and the forwarding of a cancel
// request to the peer that holds the session (Set.Forward).
//
// It knows nothing of sessions: whether a key is this instance's own
// client's is the router's to decide. peers imports configs and pool,
// never router.
package peers
