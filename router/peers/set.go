package peers

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
)

// Set is an instance's peers as the configuration it is handed names them:
// the [peers] entries, and every address peers_dns resolves to, which Set
// caches. The zero value is ready to use; a Set is safe for concurrent use
// and must not be copied after first use.
type Set struct {
	// mu guards the fields below; the lookup runs without it.
	mu    sync.Mutex
	name  string
	list  []string
	until time.Time
}

// Forward sends a cancel for peer id's client on, one TTL step
// lower: to the peer listed under id, else, on its first hop only, to every
// address of peers_dns (the instance that holds the key cancels; the others
// find no session and, the TTL no longer full, do not forward again).
// It blocks until every peer it sent to has closed the connection, ctx is
// done or cancel_wait_timeout (10 s if unset) has passed; r resolves peer
// names (nil: net.DefaultResolver), and failures go to log.
func (ps *Set) Forward(ctx context.Context, cfg *configs.Config, r *net.Resolver, log *zap.Logger, id int, pid, key uint32) {
	ttl := key & TTLMask
	if ttl == 0 {
		log.Debug("cancel request dropped: its forwarding TTL is exhausted", zap.Int("peer_id", id))
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
	} else if cfg.PeersDNS != "" && ttl == TTLMask {
		addrs = ps.addrs(ctx, cfg, r, log)
	}
	if len(addrs) == 0 {
		log.Info("cancel request for an unknown peer dropped", zap.Int("peer_id", id))
		return
	}
	timeout := cfg.CancelWaitTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host, _, _ := net.SplitHostPort(addr)
			dc := pool.DialConfig{SSLMode: pool.SSLDisable, Resolver: r}
			if err := pool.SendCancel(ctx, &dc, host, addr, pid, key); err != nil {
				log.Warn("forwarding a cancel request to a peer failed", zap.Int("peer_id", id), zap.String("peer", addr), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// List returns every peer's address (host:port): the [peers] entries, then
// what peers_dns resolves to (which may include this instance); fresh
// bypasses the DNS cache. It blocks for the DNS lookup, at most 5 s, when
// the cache is stale; r resolves peers_dns (nil: net.DefaultResolver), and
// a failed lookup is logged to log. The caller owns the returned slice.
func (ps *Set) List(cfg *configs.Config, r *net.Resolver, log *zap.Logger, fresh bool) []string {
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
		addrs = append(addrs, ps.lookup(context.Background(), cfg, r, log, fresh)...)
	}
	return addrs
}

// addrs returns the peers' addresses (host:port), resolving peers_dns again
// once the last answer is older than peers_dns_interval. On a failed lookup
// the last answer is kept.
func (ps *Set) addrs(ctx context.Context, cfg *configs.Config, r *net.Resolver, log *zap.Logger) []string {
	return ps.lookup(ctx, cfg, r, log, false)
}

// lookup is addrs; fresh resolves again whatever the cache's age. A
// lookup waits 5 s at most, less if ctx ends sooner.
func (ps *Set) lookup(ctx context.Context, cfg *configs.Config, r *net.Resolver, log *zap.Logger, fresh bool) []string {
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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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
