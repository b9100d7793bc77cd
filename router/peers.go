package router

import (
	"context"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/fleet"
)

// Peering, compatible with PgBouncer 1.19+: instances behind one TCP load
// balancer each write their peer_id into the cancel keys they hand out, so
// a CancelRequest that the balancer sends to another instance can be
// forwarded to the one holding the session. As in PgBouncer, the id sits in
// the second and third byte of the 8-byte key (the pid's middle bytes,
// low byte first), and the last two bits of the key are a TTL: 3 when
// handed out, one less per forward, dropped at 0, so forwards cannot loop.
// That leaves 45 random bits in a key.

// cancelTTLMask marks the TTL bits of a cancel key's last byte.
const cancelTTLMask = 0x03

// peerIDOf reads the peer id from a cancel key's pid.
func peerIDOf(pid uint32) int { return int(pid>>16&0xFF) | int(pid>>8&0xFF)<<8 }

// stampPeer writes peer id id and a full TTL into a random cancel key.
func stampPeer(pid, key uint32, id int) (uint32, uint32) {
	pid = pid&^0x00FFFF00 | uint32(id&0xFF)<<16 | uint32(id>>8&0xFF)<<8
	return pid, key | cancelTTLMask
}

// newCancelKey returns a fresh cancel key for a client, stamped with this
// instance's peer id when peering is on.
func (s *Server) newCancelKey() (pid, key uint32) {
	pid, key = randomKey()
	if id := s.cfg.Load().PeerID; id > 0 {
		pid, key = stampPeer(pid, key, id)
	}
	return pid, key
}

// routeCancel handles a CancelRequest: this instance's own keys (or every
// key, without peering) are served here; another peer's are forwarded.
func (s *Server) routeCancel(pid, key uint32) {
	cfg := s.cfg.Load()
	if cfg.PeerID > 0 {
		id := peerIDOf(pid)
		if id != cfg.PeerID {
			s.forwardToPeer(cfg, id, pid, key)
			return
		}
		if key&cancelTTLMask == cancelTTLMask && cfg.PeersDNS != "" && s.sessionByKey(pid, key) == nil {
			// This instance's id but not its client: another instance
			// has the same id (a Deployment's pods share one config).
			// Ask every peer, as for an id not listed.
			s.forwardToPeer(cfg, id, pid, key)
			return
		}
		// Keys are stored with a full TTL; a forwarded one has less.
		key |= cancelTTLMask
	}
	s.forwardCancel(pid, key)
}

// forwardToPeer sends a cancel for peer id's client on, one TTL step
// lower: to the peer listed under id, else, on its first hop only, to every
// address of peers_dns (the instance that holds the key cancels; the others
// find no session and, the TTL no longer full, do not forward again).
func (s *Server) forwardToPeer(cfg *configs.Config, id int, pid, key uint32) {
	ttl := key & cancelTTLMask
	if ttl == 0 {
		s.log.Debug("cancel request dropped: its forwarding TTL is exhausted", zap.Int("peer_id", id))
		return
	}
	key--
	var addrs []string
	if p, ok := cfg.Peers[strconv.Itoa(id)]; ok {
		port := p.Port
		if port == 0 {
			port = 6432
		}
		addrs = []string{net.JoinHostPort(p.Host, strconv.Itoa(port))}
	} else if cfg.PeersDNS != "" && ttl == cancelTTLMask {
		addrs = s.peers.addrs(cfg, s.opts.PeerResolver, s.log)
	}
	if len(addrs) == 0 {
		s.log.Info("cancel request for an unknown peer dropped", zap.Int("peer_id", id))
		return
	}
	timeout := cfg.CancelWaitTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host, _, _ := net.SplitHostPort(addr)
			dc := pool.DialConfig{SSLMode: pool.SSLDisable, Resolver: s.opts.PeerResolver}
			if err := pool.SendCancel(ctx, &dc, host, addr, pid, key); err != nil {
				s.log.Warn("forwarding a cancel request to a peer failed", zap.Int("peer_id", id), zap.String("peer", addr), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// peerSet caches the addresses peers_dns resolves to.
type peerSet struct {
	// mu guards the fields below; the lookup runs without it.
	mu    sync.Mutex
	name  string
	list  []string
	until time.Time
}

// addrs returns the peers' addresses (host:port), resolving peers_dns again
// once the last answer is older than peers_dns_interval. On a failed lookup
// the last answer is kept.
func (ps *peerSet) addrs(cfg *configs.Config, r *net.Resolver, log *zap.Logger) []string {
	return ps.lookup(cfg, r, log, false)
}

// lookup is addrs; fresh resolves again whatever the cache's age.
func (ps *peerSet) lookup(cfg *configs.Config, r *net.Resolver, log *zap.Logger, fresh bool) []string {
	now := time.Now()
	ps.mu.Lock()
	if ps.name == cfg.PeersDNS && now.Before(ps.until) && !fresh {
		list := ps.list
		ps.mu.Unlock()
		return list
	}
	ps.mu.Unlock()
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	hosts, err := r.LookupHost(ctx, cfg.PeersDNS)
	cancel()
	port := cfg.PeersPort
	if port == 0 {
		port = cfg.ListenPort
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err != nil {
		log.Warn("resolving peers_dns failed; using the last answer", zap.String("peers_dns", cfg.PeersDNS), zap.Error(err))
		if ps.name == cfg.PeersDNS {
			return ps.list
		}
		return nil
	}
	list := make([]string, 0, len(hosts))
	for _, h := range hosts {
		list = append(list, net.JoinHostPort(h, strconv.Itoa(port)))
	}
	ps.name, ps.list, ps.until = cfg.PeersDNS, list, now.Add(cfg.PeersDNSInterval.Std())
	return list
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
	cfg := s.cfg.Load()
	var addrs []string
	for _, id := range slices.Sorted(maps.Keys(cfg.Peers)) {
		p := cfg.Peers[id]
		port := p.Port
		if port == 0 {
			port = 6432
		}
		addrs = append(addrs, net.JoinHostPort(p.Host, strconv.Itoa(port)))
	}
	if cfg.PeersDNS != "" {
		addrs = append(addrs, s.peers.lookup(cfg, s.opts.PeerResolver, s.log, fresh)...)
	}
	return addrs
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
