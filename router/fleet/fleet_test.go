package fleet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFairSharesOfInstancesThatSeeEveryLiveOneNeverSumPastTheBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20000; round++ {
		budget := rng.IntN(40)
		// The live instances, and for each a member set that holds them
		// all plus some that are gone (not yet dropped by that instance).
		live := map[uint64]bool{}
		for len(live) == 0 {
			for id := uint64(1); id <= 8; id++ {
				if rng.IntN(2) == 0 {
					live[id] = true
				}
			}
		}
		sum := 0
		for id := range live {
			members := map[uint64]bool{}
			for l := range live {
				members[l] = true
			}
			for gone := uint64(1); gone <= 10; gone++ {
				if !live[gone] && rng.IntN(3) == 0 {
					members[gone] = true
				}
			}
			sum += fairShare(budget, members, id)
		}
		if sum > budget {
			t.Fatalf("round %d: shares sum to %d, over the budget of %d (live %v)", round, sum, budget, live)
		}
	}
	all := map[uint64]bool{1: true, 2: true, 3: true}
	if got := []int{fairShare(10, all, 1), fairShare(10, all, 2), fairShare(10, all, 3)}; got[0] != 4 || got[1] != 3 || got[2] != 3 {
		t.Errorf("10 among 3 gives %v, want [4 3 3]: the remainder to the lowest ids, the whole budget used", got)
	}
}

// instance is one Fleet with its own listener, standing in for pgferry's
// accept loop: a peer link's 8-byte header, then Accept.
type instance struct {
	f     *Fleet
	ln    net.Listener
	limit *pool.Limit
	wg    sync.WaitGroup
}

func startInstance(t *testing.T, id int, ln net.Listener, peers func(bool) []string) *instance {
	t.Helper()
	in := &instance{ln: ln, limit: pool.NewSettableLimit(0)}
	in.f = New(Config{
		ID: id, Interval: 100 * time.Millisecond, Peers: peers,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	in.f.Track("db/app", 10, 0, in.limit)
	in.f.Start()
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[4:]) != protocol.PeerLinkCode {
				c.Close()
				continue
			}
			in.f.Accept(c, nil)
		}
	}()
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() {
	in.ln.Close()
	in.wg.Wait()
	in.f.Stop()
}

func (in *instance) share() int { return in.f.Status().Budgets["db/app"].Cap }

func waitForShares(t *testing.T, what string, want map[*instance]int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for in, n := range want {
			ok = ok && in.share() == n && in.limit.Stat().Max == n
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for in, n := range want {
				t.Errorf("%s: peer %d has a share of %d (limit %d), want %d", what, in.f.cfg.ID, in.share(), in.limit.Stat().Max, n)
			}
			t.FailNow()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInstancesShareABudgetAsTheyJoinAndLeave(t *testing.T) {
	lns, addrs := listen(t, 3)
	// Every instance lists every address, itself included, as a headless
	// Service's DNS name does.
	peers := func(bool) []string { return addrs }

	a := startInstance(t, 1, lns[0], peers)
	waitForShares(t, "alone (the others refuse)", map[*instance]int{a: 10})
	b := startInstance(t, 2, lns[1], peers)
	waitForShares(t, "two", map[*instance]int{a: 5, b: 5})
	c := startInstance(t, 3, lns[2], peers)
	waitForShares(t, "three", threeShares(a, b, c))
	if st := a.f.Status(); st.Members != 3 || st.Peers != 2 || !st.Ready {
		t.Errorf("with three instances, one reports %+v; want 3 members, 2 peers, ready", st)
	}

	// A clean stop says it left: the others take its share at once.
	c.stop()
	waitForShares(t, "after one stopped", map[*instance]int{a: 5, b: 5})
}

func TestANewInstanceOpensNothingUntilTheOthersHaveMadeRoom(t *testing.T) {
	// Peer 2 reports that it holds the whole budget (its pools full and
	// slow to shrink): the others may take nothing.
	held := startFakePeer(t, 2, use{Cap: 10, Used: 10})
	lns, addrs := listen(t, 2)
	addrs = append(addrs, held.ln.Addr().String())
	peers := func(bool) []string { return addrs }
	a := startInstance(t, 1, lns[0], peers)
	held.lists(a)
	waitForShares(t, "a peer holds it all", map[*instance]int{a: 0})
	b := startInstance(t, 3, lns[1], peers)
	held.lists(b)
	time.Sleep(500 * time.Millisecond) // five intervals: time enough to grow, if it would
	if n := b.share(); n != 0 {
		t.Fatalf("a newcomer took %d connections while its peers held the whole budget", n)
	}
	held.set(use{Cap: 3, Used: 3}, false)
	// The remainder goes to the lowest nonces: one of the two gets 4.
	deadline := time.Now().Add(10 * time.Second)
	for a.share()+b.share() != 7 || min(a.share(), b.share()) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("once the peer shrank to 3 of 10, the others hold %d and %d; want 3 and 4", a.share(), b.share())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClaimsOnALinkSomeoneElseOpenedAreNotCounted(t *testing.T) {
	lns, addrs := listen(t, 1)
	ln, addr := lns[0], addrs[0]
	a := startInstance(t, 1, ln, func(bool) []string { return []string{addr} })
	waitForShares(t, "alone", map[*instance]int{a: 10})
	// Anyone can open a link to the port and claim to hold the budget, or
	// negative connections: neither changes the share.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(linkHeader())
	conn.Write(encodeReport(&report{ID: 2, Nonce: 99, Ready: true, View: []uint64{99, a.f.nonce},
		Budgets: map[string]use{"db/app": {Cap: 10, Used: 10}}}))
	var n [4]byte
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		t.Fatalf("no report back on a link that reported itself: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // three intervals
	if got := a.share(); got != 10 {
		t.Fatalf("a claim on an accepted link changed the share to %d", got)
	}
	if _, err := readReport(bufio.NewReader(bytes.NewReader(encodeReport(&report{ID: 2, Nonce: 5,
		Budgets: map[string]use{"db/app": {Cap: -1000}}})))); err == nil {
		t.Error("a report with negative connections was accepted")
	}
}

// fakePeer is a listed peer that speaks the link protocol with a report
// the test sets.
type fakePeer struct {
	id      int
	ln      net.Listener
	mu      sync.Mutex
	u       use
	conns   []net.Conn
	view    []uint64
	leaving bool
	done    chan struct{}
	wg      sync.WaitGroup
}

func startFakePeer(t *testing.T, id int, u use) *fakePeer {
	lns, _ := listen(t, 1)
	ln := lns[0]
	p := &fakePeer{id: id, ln: ln, u: u, done: make(chan struct{}), view: []uint64{fakeNonce}}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() { defer p.wg.Done(); io.Copy(io.Discard, c) }()
			p.send()
		}
	}()
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
				p.send()
			}
		}
	}()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// lists puts in into the fake's view, as if it had heard from it.
func (p *fakePeer) lists(in *instance) {
	p.mu.Lock()
	p.view = append(p.view, in.f.nonce)
	p.mu.Unlock()
	p.send()
}

func (p *fakePeer) set(u use, leaving bool) {
	p.mu.Lock()
	p.u, p.leaving = u, leaving
	p.mu.Unlock()
	p.send()
}

func (p *fakePeer) send() {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := encodeReport(&report{ID: p.id, Nonce: fakeNonce, Ready: true, Leaving: p.leaving, View: p.view,
		Budgets: map[string]use{"db/app": p.u}})
	for _, c := range p.conns {
		c.Write(msg)
	}
}

// threeShares is what 10 among a, b and c gives each: 3, and 4 for the
// lowest nonce.
func threeShares(a, b, c *instance) map[*instance]int {
	want := map[*instance]int{a: 3, b: 3, c: 3}
	lowest := a
	for _, in := range []*instance{b, c} {
		if in.f.nonce < lowest.f.nonce {
			lowest = in
		}
	}
	want[lowest] = 4
	return want
}

// fakeNonce ranks the fake peer last, so the remainder of a budget goes
// to the real instances.
const fakeNonce = ^uint64(0)

func TestTwoInstancesThatShareAPeerIDStillShareTheBudget(t *testing.T) {
	lns, addrs := listen(t, 2)
	peers := func(bool) []string { return addrs }
	a := startInstance(t, 5, lns[0], peers)
	b := startInstance(t, 5, lns[1], peers)
	waitForShares(t, "two instances with peer_id 5", map[*instance]int{a: 5, b: 5})
}

func TestManyInstancesOnOneAddressAllLinkAndShare(t *testing.T) {
	const n = 8
	lns, addrs := listen(t, n)
	peers := func(bool) []string { return addrs }
	var all []*instance
	for i := range lns {
		all = append(all, startInstance(t, i+1, lns[i], peers))
	}
	// Eight instances behind one address: more links from it than the
	// limit for unlisted addresses allows, all of them listed peers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sum, agree := 0, true
		for _, in := range all {
			sum += in.share()
			agree = agree && in.f.Status().Members == n
		}
		if sum == 10 && agree {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("eight instances on one address: shares add up to %d, members agree: %v; want 10, true", sum, agree)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAPeerThatLeftTheListStillCountsUntilItHasClosedItsConnections(t *testing.T) {
	leaving := startFakePeer(t, 2, use{Cap: 5, Used: 5})
	lns, addrs := listen(t, 1)
	var mu sync.Mutex
	addrs = append(addrs, leaving.ln.Addr().String())
	a := startInstance(t, 1, lns[0], func(bool) []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(addrs) })
	leaving.lists(a)
	waitForShares(t, "with a peer holding 5", map[*instance]int{a: 5})
	// It shuts down and leaves DNS, still holding 5 while it drains.
	leaving.set(use{Cap: 5, Used: 5}, true)
	mu.Lock()
	addrs = addrs[:1]
	mu.Unlock()
	time.Sleep(600 * time.Millisecond) // six intervals: long past its silence timeout, were it dropped
	if got := a.share(); got > 5 {
		t.Fatalf("a peer leaving the list while holding 5 was forgotten: the share grew to %d", got)
	}
	leaving.set(use{}, true)
	waitForShares(t, "once it has closed everything", map[*instance]int{a: 10})
}

// listen opens n loopback listeners (closed by the instances or fakes that
// take them) and returns them with their addresses.
func listen(t *testing.T, n int) ([]net.Listener, []string) {
	t.Helper()
	lns := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], addrs[i] = ln, ln.Addr().String()
	}
	return lns, addrs
}
