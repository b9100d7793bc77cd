package fleet

import (
	"bytes"
	"net"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
)

// state is the owner goroutine's: nothing else touches it.
type state struct {
	f       *Fleet
	start   time.Time
	peers   map[uint64]*peer // by nonce: an instance is its process, whatever its peer_id
	links   map[*link]struct{}
	out     map[string]*link     // dialed links by address
	dialing map[string]bool      // dials under way
	retry   map[string]time.Time // no dial to a refusing address before
	self    map[string]bool      // addresses that turned out to be this instance
	list    []string             // the peer list last resolved
	// pending holds the listed addresses not yet heard from (or refused)
	// since start; ready is false until it empties once.
	pending   map[string]bool
	listed    bool
	resolving bool
	resolveAt time.Time
	// resolveSoon: an unlisted address opened a link; resolve the list
	// again (DNS bypassing its cache) at most once per interval.
	resolveSoon bool
	forcedAt    time.Time
	ready       bool
	leaving     bool
	stopped     bool // after stop: links and dials that arrive are closed
	budgets     map[string]*budget
	lastSent    []byte
	lastBeat    time.Time
	warned      map[int]time.Time // duplicate peer ids, rate-limited
}

// peer is the last report of a peer and when it came.
type peer struct {
	rep  *report
	seen time.Time
}

// budget is one fleet budget and the limit that enforces this instance's
// share of it.
type budget struct {
	max, local int
	limit      *pool.Limit
	cap        int // the share last computed (before local)
	applied    int // the cap last given to limit, -1 before the first
}

func (f *Fleet) run() {
	defer f.wg.Done()
	st := &state{
		f: f, start: time.Now(),
		peers: map[uint64]*peer{}, links: map[*link]struct{}{}, out: map[string]*link{},
		dialing: map[string]bool{}, retry: map[string]time.Time{}, self: map[string]bool{},
		pending: map[string]bool{}, budgets: map[string]*budget{}, warned: map[int]time.Time{},
	}
	tick := time.NewTicker(f.cfg.Interval / 4)
	defer tick.Stop()
	for {
		select {
		case ev := <-f.events:
			ev(st)
		case <-f.kick:
			st.addTracks()
		case <-tick.C:
		case <-f.done:
			st.stop()
			// Events posted before Stop: dials and accepted links are
			// closed (st.stopped), the rest is moot.
			for {
				select {
				case ev := <-f.events:
					ev(st)
				default:
					return
				}
			}
		}
		st.maintain(time.Now())
	}
}

// timeout is how long a silent peer still counts.
func (st *state) timeout() time.Duration { return 3 * st.f.cfg.Interval }

// maintain resolves and dials the peers, drops the silent ones, computes
// the caps and sends the report when it changed or a heartbeat is due.
func (st *state) maintain(now time.Time) {
	f := st.f
	if !st.resolving && !st.leaving {
		fresh := st.resolveSoon && now.Sub(st.forcedAt) >= f.cfg.Interval
		if fresh || now.After(st.resolveAt) {
			if fresh {
				st.resolveSoon, st.forcedAt = false, now
			}
			st.resolving, st.resolveAt = true, now.Add(f.cfg.Interval)
			f.wg.Add(1)
			go f.resolve(fresh)
		}
	}
	if st.listed && !st.leaving {
		for _, addr := range st.list {
			if st.self[addr] || st.dialing[addr] || st.out[addr] != nil || now.Before(st.retry[addr]) {
				continue
			}
			st.dialing[addr] = true
			f.wg.Add(1)
			go f.dial(addr)
		}
	}
	for nonce, p := range st.peers {
		if now.Sub(p.seen) > st.timeout() {
			f.cfg.Log.Info("fleet peer gone", zap.Int("peer_id", p.rep.ID))
			delete(st.peers, nonce)
		}
	}
	if !st.ready && ((st.listed && len(st.pending) == 0) || now.Sub(st.start) >= st.timeout()) {
		st.ready = true
	}
	msg := st.compute()
	if !bytes.Equal(msg, st.lastSent) || now.Sub(st.lastBeat) >= f.cfg.Interval {
		st.lastSent, st.lastBeat = msg, now
		for l := range st.links {
			if l.addr != "" || l.nonce != 0 {
				l.send(msg)
			}
		}
	}
}

// compute sets every budget's cap and returns the report that says so.
func (st *state) compute() []byte {
	f := st.f
	rep := &report{ID: f.cfg.ID, Nonce: f.nonce, Ready: st.ready, Leaving: st.leaving, View: []uint64{f.nonce}}
	members := map[uint64]bool{}
	if !st.leaving {
		members[f.nonce] = true
	}
	acked := st.ready
	for id, p := range st.peers {
		rep.View = append(rep.View, id)
		if p.rep.Leaving {
			continue
		}
		members[id] = true
		for _, v := range p.rep.View {
			members[v] = true
		}
		if !p.rep.lists(f.nonce) {
			acked = false
		}
	}
	for id, p := range st.peers {
		if p.rep.Leaving {
			delete(members, id)
		}
	}
	for id := range members {
		if _, heard := st.peers[id]; !heard && id != f.nonce {
			// A member known only from another's view: what it holds
			// is unknown until it reports here.
			acked = false
		}
	}
	slices.Sort(rep.View)
	status := &Status{Peers: len(st.peers), Members: len(members), Ready: st.ready, Budgets: map[string]BudgetStatus{}}
	if len(st.budgets) > 0 {
		rep.Budgets = map[string]use{}
	}
	for key, b := range st.budgets {
		used := b.limit.Stat().InUse
		leavers, others := 0, 0
		for _, p := range st.peers {
			u := min(p.rep.Budgets[key].held(), b.max)
			if p.rep.Leaving {
				leavers += u
			} else {
				others += u
			}
		}
		var c int
		switch {
		case st.leaving:
			// Shutting down: keep what is open, open nothing more.
			c = min(max(b.cap, 0), used)
		default:
			fair := fairShare(b.max-leavers, members, f.nonce)
			c = max(min(fair, b.max-leavers-others), 0)
			if !acked {
				// Not every peer knows this instance yet: do not grow.
				c = min(c, max(used, b.cap, 0))
				if b.applied < 0 {
					c = min(c, used)
				}
			}
		}
		b.cap = c
		if b.local > 0 {
			c = min(c, b.local)
		}
		if c != b.applied {
			if b.applied >= 0 {
				f.cfg.Log.Info("fleet share changed", zap.String("budget", key), zap.Int("cap", c),
					zap.Int("was", b.applied), zap.Int("members", len(members)))
			}
			b.limit.SetMax(c)
			b.applied = c
		}
		rep.Budgets[key] = use{Cap: c, Used: used}
		status.Budgets[key] = BudgetStatus{Max: b.max, Cap: c, Used: used}
	}
	f.status.Store(status)
	return encodeReport(rep)
}

// takeList takes a resolved peer list.
func (st *state) takeList(list []string) {
	st.resolving = false
	if !st.listed {
		for _, a := range list {
			st.pending[a] = true
		}
	}
	st.list, st.listed = list, true
	// Links to addresses no longer listed are closed, unless a peer still
	// reports on them: an instance shutting down leaves DNS (or [peers])
	// while it still holds connections, and counts until it says it left
	// holding nothing or falls silent.
	for addr, l := range st.out {
		if !slices.Contains(list, addr) && (l.nonce == 0 || st.peers[l.nonce] == nil) {
			st.drop(l)
		}
	}
}

// dialed takes the outcome of a dial.
func (st *state) dialed(addr string, conn net.Conn, err error) {
	delete(st.dialing, addr)
	if err != nil || st.leaving {
		if conn != nil {
			conn.Close()
		}
		delete(st.pending, addr)
		st.retry[addr] = time.Now().Add(st.f.cfg.Interval)
		return
	}
	l := newLink(conn, addr, nil)
	if st.open(l) {
		st.out[addr] = l
	} else {
		st.retry[addr] = time.Now().Add(st.f.cfg.Interval)
	}
}

// maxLinks bounds the accepted links open at once, and maxLinksPerHost
// those from one address: a peer opens one, and anyone who reaches the
// port can open some. (Dialed links are bounded by the peer list.)
const (
	maxLinks        = 1024
	maxLinksPerHost = 4
)

// open starts a link's reader and writer and sends it the latest report;
// it reports false (and closes the link) when too many are open.
func (st *state) open(l *link) bool {
	if st.stopped {
		l.conn.Close()
		return false
	}
	if l.addr == "" && !st.listsHost(l.conn.RemoteAddr()) {
		// Links from listed peers are bounded by the list; the limits
		// are for everyone else.
		host, _, _ := net.SplitHostPort(l.conn.RemoteAddr().String())
		total, fromHost := 0, 0
		for o := range st.links {
			if o.addr == "" && !st.listsHost(o.conn.RemoteAddr()) {
				total++
				if h, _, _ := net.SplitHostPort(o.conn.RemoteAddr().String()); h == host {
					fromHost++
				}
			}
		}
		if total >= maxLinks || fromHost >= maxLinksPerHost {
			st.f.cfg.Log.Warn("peer link refused: too many links open", zap.Int("links", total),
				zap.Int("from_host", fromHost), zap.String("peer", l.conn.RemoteAddr().String()))
			l.conn.Close()
			return false
		}
	}
	st.links[l] = struct{}{}
	st.f.wg.Add(2)
	go st.f.read(l)
	go st.f.write(l)
	if st.lastSent != nil && l.addr != "" {
		// An accepted link hears nothing until it has reported itself.
		l.send(st.lastSent)
	}
	return true
}

// heard takes a report that came on l. Only reports on links this
// instance dialed, to an address of its peer list, are counted: a link
// anyone opened to the port can carry any claim. An accepted link's first
// report only says that someone wants this instance's reports (sent from
// then on) and may be a peer the list does not show yet (the list is
// resolved again).
func (st *state) heard(l *link, rep *report) {
	if l.closed {
		return
	}
	f := st.f
	now := time.Now()
	if l.nonce != 0 && rep.Nonce != l.nonce {
		f.cfg.Log.Warn("peer link closed: its reports changed identity", zap.String("peer", l.conn.RemoteAddr().String()))
		st.drop(l)
		return
	}
	first := l.nonce == 0
	l.nonce, l.peer = rep.Nonce, rep.ID
	if l.addr == "" {
		if first {
			if st.lastSent != nil {
				l.send(st.lastSent)
			}
			if !st.listsHost(l.conn.RemoteAddr()) {
				st.resolveSoon = true
			}
		}
		return
	}
	if rep.Nonce == f.nonce {
		// A link to this instance: the peer list names it too.
		st.self[l.addr] = true
		delete(st.pending, l.addr)
		st.drop(l)
		return
	}
	if rep.ID == f.cfg.ID && now.Sub(st.warned[rep.ID]) > time.Minute {
		// The budgets still count it (instances are told apart by their
		// nonce), but cancels for its clients may be lost.
		st.warned[rep.ID] = now
		f.cfg.Log.Error("another instance uses this instance's peer_id; peer ids must be unique in a fleet",
			zap.Int("peer_id", rep.ID), zap.String("peer", l.conn.RemoteAddr().String()))
	}
	delete(st.pending, l.addr)
	if rep.Leaving && rep.holds() == 0 {
		// Shut down with nothing open: gone now rather than when silent.
		if _, ok := st.peers[rep.Nonce]; ok {
			f.cfg.Log.Info("fleet peer left", zap.Int("peer_id", rep.ID))
		}
		delete(st.peers, rep.Nonce)
		if !slices.Contains(st.list, l.addr) {
			st.drop(l)
		}
		return
	}
	if _, ok := st.peers[rep.Nonce]; !ok {
		f.cfg.Log.Info("fleet peer joined", zap.Int("peer_id", rep.ID), zap.String("peer", l.conn.RemoteAddr().String()))
	}
	st.peers[rep.Nonce] = &peer{rep: rep, seen: now}
}

// listsHost reports whether addr's host is in the peer list.
func (st *state) listsHost(addr net.Addr) bool {
	host, _, _ := net.SplitHostPort(addr.String())
	for _, a := range st.list {
		if h, _, _ := net.SplitHostPort(a); h == host {
			return true
		}
	}
	return false
}

// holds sums what a report holds across its budgets.
func (r *report) holds() int {
	n := 0
	for _, u := range r.Budgets {
		n += u.held()
	}
	return n
}

// down forgets a link whose reader ended. The peer keeps counting until it
// is silent for the timeout, or says it left.
func (st *state) down(l *link, err error) {
	if !l.closed {
		st.f.cfg.Log.Debug("fleet link closed", zap.Int("peer_id", l.peer), zap.String("peer", l.conn.RemoteAddr().String()), zap.Error(err))
	}
	st.drop(l)
	if l.addr != "" {
		st.retry[l.addr] = time.Now().Add(st.f.cfg.Interval / 4)
	}
}

func (st *state) drop(l *link) {
	l.close()
	delete(st.links, l)
	if l.addr != "" && st.out[l.addr] == l {
		delete(st.out, l.addr)
	}
}

// addTracks takes the budgets Track added.
func (st *state) addTracks() {
	for _, t := range st.f.takeTracks() {
		st.budgets[t.key] = &budget{max: t.max, local: t.local, limit: t.limit, applied: -1}
	}
}

// stop sends the last report and closes every link.
func (st *state) stop() {
	st.addTracks()
	st.stopped = true
	st.leaving = true
	msg := st.compute()
	for l := range st.links {
		l.send(msg)
		st.drop(l)
	}
}

// fairShare divides budget among members: budget/len(members) each, and
// one more for as many members as the remainder, lowest nonces first.
// Instances whose member sets contain every live instance never sum past
// budget, even when the sets differ: a larger set or a higher rank in it
// only lowers a share.
func fairShare(budget int, members map[uint64]bool, self uint64) int {
	if budget <= 0 || len(members) == 0 {
		return 0
	}
	rank := 0
	for id := range members {
		if id < self {
			rank++
		}
	}
	n := len(members)
	share := budget / n
	if rank < budget%n {
		share++
	}
	return share
}
