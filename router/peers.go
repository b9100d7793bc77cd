package router

import (
	"context"
	"net"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/fleet"
	"github.com/pgferry/pgferry/router/peers"
)

// The router's side of peering: the keys it hands out and the cancels it
// routes by them, and the fleet's peer list. The keys' layout, the peers
// and the forwarding are router/peers.

// newCancelKey returns a fresh cancel key for a client, stamped with this
// instance's peer id when peering is on.
func (s *Server) newCancelKey() (pid, key uint32) {
	pid, key = randomKey()
	if id := s.cfg.Load().PeerID; id > 0 {
		pid, key = peers.Stamp(pid, key, id)
	}
	return pid, key
}

// routeCancel handles a CancelRequest: this instance's own keys (or every
// key, without peering) are served here; another peer's are forwarded.
func (s *Server) routeCancel(pid, key uint32) {
	cfg := s.cfg.Load()
	if cfg.PeerID > 0 {
		id := peers.IDOf(pid)
		if id != cfg.PeerID {
			s.peers.Forward(context.Background(), cfg, s.opts.PeerResolver, s.log, id, pid, key)
			return
		}
		if key&peers.TTLMask == peers.TTLMask && cfg.PeersDNS != "" && s.sessionByKey(pid, key) == nil {
			// This instance's id but not its client: another instance
			// has the same id (a Deployment's pods share one config).
			// Ask every peer, as for an id not listed.
			s.peers.Forward(context.Background(), cfg, s.opts.PeerResolver, s.log, id, pid, key)
			return
		}
		// Keys are stored with a full TTL; a forwarded one has less.
		key |= peers.TTLMask
	}
	s.forwardCancel(pid, key)
}

// newFleet sets up the fleet-wide connection budgets (router/fleet) over
// the same peers that cancels are forwarded to.
func (s *Server) newFleet(cfg *configs.Config) *fleet.Fleet {
	return fleet.New(fleet.Config{
		ID:       cfg.PeerID,
		Interval: cfg.FleetInterval.Std(),
		Log:      s.log.Named("fleet").With(zap.Int("self", cfg.PeerID)),
		Peers:    s.peerAddrs,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{Resolver: s.opts.PeerResolver}
			return d.DialContext(ctx, "tcp", addr)
		},
	})
}

// peerAddrs lists every peer's address: the [peers] entries, then what
// peers_dns resolves to (which may include this instance); fresh bypasses
// the DNS cache.
func (s *Server) peerAddrs(fresh bool) []string {
	return s.peers.List(s.cfg.Load(), s.opts.PeerResolver, s.log, fresh)
}

// fleetLimit returns the limit for a database ("db/") or user ("user/")
// key: the local cap alone, or, under a fleet budget, a limit the fleet
// sets to this instance's share (at most local). s.mu is held.
func (s *Server) fleetLimit(key string, local, budget int) *pool.Limit {
	if s.fleet == nil || budget <= 0 {
		return pool.NewLimit(local)
	}
	l := pool.NewSettableLimit(0) // nothing before the first exchange
	s.fleet.Track(key, budget, local, l)
	return l
}
