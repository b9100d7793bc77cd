package fleet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// Config says who this instance is and how it reaches its peers.
type Config struct {
	// ID is this instance's peer_id.
	ID int
	// Interval is the heartbeat; a peer silent for three intervals is
	// gone. Default 1s.
	Interval time.Duration
	// Peers returns the addresses (host:port) to link to; fresh asks for
	// a DNS answer not from its cache. It may block on DNS; it runs outside
	// the owner goroutine.
	Peers func(fresh bool) []string
	// Dial opens a TCP connection to a peer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	Log  *zap.Logger
}

// Fleet shares budgets with the peers. Its methods are safe for concurrent
// use; they post events to the owner goroutine.
type Fleet struct {
	cfg    Config
	nonce  uint64
	events chan func(*state)
	done   chan struct{} // closed by Stop
	// mu orders posts before Stop: once stopped is set no event is sent,
	// so the owner, draining the channel after done, sees every one.
	mu      sync.RWMutex
	stopped bool
	// tracks holds budgets Track added, for the owner to pick up: Track
	// runs under the router's lock and must not block on the channel.
	trackMu sync.Mutex
	tracks  []track
	kick    chan struct{}
	wg      sync.WaitGroup
	status  atomic.Pointer[Status]
}

type track struct {
	key        string
	max, local int
	limit      *pool.Limit
}

// Status is a snapshot for the admin console and metrics.
type Status struct {
	// Peers counts the peers heard from within three intervals; Members
	// is the number the budgets are divided by.
	Peers, Members int
	// Ready is false until the first exchange with every listed peer.
	Ready   bool
	Budgets map[string]BudgetStatus
}

// BudgetStatus is one budget: the fleet-wide Max, this instance's Cap and
// its connections open or opening (Used).
type BudgetStatus struct{ Max, Cap, Used int }

// New returns a Fleet; Start runs it.
func New(cfg Config) *Fleet {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	var b [8]byte
	rand.Read(b[:])
	f := &Fleet{
		cfg:    cfg,
		nonce:  binary.LittleEndian.Uint64(b[:]) | 1,
		events: make(chan func(*state), 256),
		done:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
	}
	f.status.Store(&Status{})
	return f
}

// Start runs the owner goroutine; Stop ends it.
func (f *Fleet) Start() {
	f.wg.Add(1)
	go f.run()
}

// Track puts limit under the fleet budget max named key ("db/app",
// "user/alice"): its cap becomes this instance's share, and no more than
// local when local > 0. The limit should start at 0, so nothing is opened
// before the first exchange with the peers. Track never blocks.
func (f *Fleet) Track(key string, max, local int, limit *pool.Limit) {
	f.trackMu.Lock()
	f.tracks = append(f.tracks, track{key: key, max: max, local: local, limit: limit})
	f.trackMu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// takeTracks hands the owner the budgets added since it last looked.
func (f *Fleet) takeTracks() []track {
	f.trackMu.Lock()
	defer f.trackMu.Unlock()
	t := f.tracks
	f.tracks = nil
	return t
}

// Leave announces that this instance is shutting down: it opens no more
// connections, and the peers count the ones it still has until they close.
func (f *Fleet) Leave() {
	f.post(func(st *state) { st.leaving = true })
}

// Stop sends a last report (leaving, with the connections left open, which
// are none once the pools are closed), closes every link and waits for the
// fleet's goroutines.
func (f *Fleet) Stop() {
	f.mu.Lock()
	if !f.stopped {
		f.stopped = true
		close(f.done)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Status returns the latest snapshot.
func (f *Fleet) Status() Status { return *f.status.Load() }

// Accept takes over conn, on which a peer sent PeerLinkCode; buffered holds
// bytes already read past the code.
func (f *Fleet) Accept(conn net.Conn, buffered []byte) {
	l := newLink(conn, "", buffered)
	if !f.post(func(st *state) { _ = st.open(l) }) {
		conn.Close()
	}
}

// post hands ev to the owner; it reports false once the fleet is stopped.
// The owner keeps taking events until done, then drains what was sent, so
// an event posted is always run.
func (f *Fleet) post(ev func(*state)) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.stopped {
		return false
	}
	f.events <- ev
	return true
}

// linkHeader opens a link: a startup-sized packet with PeerLinkCode.
func linkHeader() []byte {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], 8)
	binary.BigEndian.PutUint32(b[4:], protocol.PeerLinkCode)
	return b[:]
}

// dial opens a link to addr and posts the outcome.
func (f *Fleet) dial(addr string) {
	defer f.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Interval)
	defer cancel()
	conn, err := f.cfg.Dial(ctx, addr)
	if err == nil {
		conn.SetWriteDeadline(time.Now().Add(f.cfg.Interval))
		if _, err = conn.Write(linkHeader()); err != nil {
			conn.Close()
		}
	}
	if !f.post(func(st *state) { st.dialed(addr, conn, err) }) && err == nil {
		conn.Close()
	}
}

// resolve lists the peers and posts the list.
func (f *Fleet) resolve(fresh bool) {
	defer f.wg.Done()
	list := f.cfg.Peers(fresh)
	f.post(func(st *state) { st.takeList(list) })
}
