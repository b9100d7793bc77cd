package lag

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
)

const (
	defaultInterval     = time.Second
	maxDefaultProbeTime = 2 * time.Second
	// minHist and maxHist bound how many of the primary's positions a
	// Monitor keeps (Monitor.hist).
	minHist, maxHist = 16, 1024
)

// point is the writable primary's pg_current_wal_lsn() and the Monitor's
// clock (Config.Now) just before and after the query that read it.
type point struct {
	before, after time.Time
	lsn           uint64
}

// Config configures a Monitor. The Monitor keeps its own copy.
type Config struct {
	// Primary says how to reach the primary. Hosts may list several servers
	// (each "host" or "host:port"); every round probes them in order and the
	// first not in recovery is the writable primary. RequireWritable is
	// ignored: the probe must reach standbys to tell them apart.
	Primary pool.DialConfig
	// Replicas are the servers whose lag is measured, in the order that
	// InRotation, Status and ReplayedPast index them.
	Replicas []Replica
	// MaxLagBytes bounds the WAL byte lag of a replica in rotation; 0 means
	// no bound.
	MaxLagBytes int64
	// MaxLag bounds the replay time lag of a replica in rotation; 0 means no
	// bound.
	MaxLag time.Duration
	// Interval is the probe period; default 1s.
	Interval time.Duration
	// ProbeTimeout bounds dial, login and query of one server in one round;
	// default min(Interval, 2s).
	ProbeTimeout time.Duration
	// Now is the clock that stamps LastProbe and the probes the time lag
	// is bounded by (see the package doc); default time.Now. The replicas'
	// probes call it concurrently.
	Now func() time.Time
	// Logger receives rotation changes and primary changes; nil logs nothing.
	Logger *zap.Logger
}

// Replica is one replica to monitor.
type Replica struct {
	// Name identifies the replica in logs and Status (the backend name).
	Name string
	// Dial says how to reach it; RequireWritable is ignored.
	Dial pool.DialConfig
	// Weight is not used by the Monitor; it travels with the replica for the
	// router's choice among replicas in rotation.
	Weight int
}

// ReplicaStatus is a snapshot of one replica after the last round that
// probed it.
type ReplicaStatus struct {
	Name string
	// Up reports whether the last probe succeeded.
	Up bool
	// InRecovery reports pg_is_in_recovery() from the last successful probe;
	// false means the server was promoted and is no longer a replica.
	InRecovery bool
	// InRotation reports whether the replica is eligible for reads.
	InRotation bool
	// LagBytes is the WAL byte lag behind the primary; -1 when unknown (probe
	// failed, or no writable primary found in that round).
	LagBytes int64
	// LagSeconds is the replay time lag in seconds; -1 when unknown.
	LagSeconds float64
	// ReplayLSN is pg_last_wal_replay_lsn() from the last successful probe
	// that returned one (kept while the replica is down).
	ReplayLSN uint64
	// LastProbe is when the last probe of this replica finished (Config.Now);
	// zero before the first.
	LastProbe time.Time
	// Err is the last probe's error; empty when it succeeded.
	Err string
}

// PrimaryStatus is a snapshot of the primary after the last round.
type PrimaryStatus struct {
	// Up reports whether any primary host answered the probe.
	Up bool
	// Host is the Config.Primary.Hosts entry that answered: the writable
	// primary, or, when none is writable, the first host that answered.
	// Empty when no host answered.
	Host string
	// InRecovery reports that every host that answered is in recovery, so
	// there is no writable primary. Up && !InRecovery means Host is writable.
	InRecovery bool
	// CurrentLSN is the writable primary's pg_current_wal_lsn(); 0 when there
	// is none.
	CurrentLSN uint64
	// LastProbe is when the last round finished (Config.Now); zero before the
	// first.
	LastProbe time.Time
	// Err explains why no writable primary was found; empty when one was.
	Err string
}

// Monitor measures replica lag and keeps the set of replicas in rotation. Its
// methods are safe for concurrent use. InRotation and ReplayedPast take no
// lock and do not allocate, for the router's per-transaction use.
//
// A Monitor owns its probe connections: it opens them, and Close closes them.
type Monitor struct {
	cfg          Config
	bounds       bounds
	probeTimeout time.Duration
	log          *zap.Logger

	// round is a one-slot token: its holder runs a probe round and may use
	// primary and replicas (the probers). Close takes it for good.
	round    chan struct{}
	primary  []*prober // one per Config.Primary.Hosts entry
	replicas []*prober // one per Config.Replicas entry
	// hist is the writable primary's position at each of the last rounds
	// that found one, oldest first, at most histCap of them; the round
	// token's holder owns it.
	hist    []point
	histCap int

	// ctx lives as long as the Monitor; Close cancels it, which stops the
	// loop and cuts short a running round.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the loop goroutine
	closeOnce sync.Once

	// rotation holds the indexes of replicas in rotation; the slice is
	// replaced, never modified. Stored while holding mu.
	rotation atomic.Pointer[[]int]
	// replay[i] is replica i's last measured replay LSN.
	replay []atomic.Uint64

	// mu guards the fields below; no I/O (logging included) runs under it.
	mu       sync.Mutex
	started  bool
	closed   bool
	prim     PrimaryStatus
	reps     []replicaState
	noWriter bool // the last round found no writable primary (to log changes once)
}

// New returns a Monitor for cfg. It opens no connection: call ProbeNow for a
// first synchronous round, Start for background probing, and Close when done.
// Until the first round every replica is out of rotation.
func New(cfg Config) *Monitor {
	cfg.Replicas = append([]Replica(nil), cfg.Replicas...)
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Monitor{
		cfg:          cfg,
		bounds:       bounds{maxBytes: max(cfg.MaxLagBytes, 0), maxLag: max(cfg.MaxLag, 0)},
		probeTimeout: cfg.ProbeTimeout,
		log:          zap.NewNop(),
		round:        make(chan struct{}, 1),
		replay:       make([]atomic.Uint64, len(cfg.Replicas)),
		reps:         make([]replicaState, len(cfg.Replicas)),
	}
	if m.probeTimeout <= 0 {
		m.probeTimeout = min(cfg.Interval, maxDefaultProbeTime)
	}
	// Enough rounds to span twice MaxLag at the probe period, so that a
	// replica behind all of them is known to be over the bound.
	m.histCap = min(max(int(2*m.bounds.maxLag/cfg.Interval)+4, minHist), maxHist)
	if cfg.Logger != nil {
		m.log = cfg.Logger.With(zap.String("component", "lag"))
	}
	for _, h := range cfg.Primary.Hosts {
		dc := cfg.Primary
		dc.Hosts = []string{h}
		m.primary = append(m.primary, newProber(h, dc))
	}
	for i, r := range cfg.Replicas {
		m.replicas = append(m.replicas, newProber(r.Name, r.Dial))
		m.reps[i].status = ReplicaStatus{Name: r.Name, LagBytes: -1, LagSeconds: -1}
	}
	m.prim.Err = "not probed yet"
	m.rotation.Store(&[]int{})
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// Start launches the background goroutine that probes at once and then
// every Interval until Close. Calls after the first, or after Close, do
// nothing.
func (m *Monitor) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	m.wg.Add(1)
	go m.loop()
}

func (m *Monitor) loop() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		m.ProbeNow(m.ctx)
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops background probing, cuts short a round in progress, waits for
// it and closes the probe connections. It is idempotent; every call returns
// after the Monitor's goroutines have exited. Snapshots stay readable.
func (m *Monitor) Close() {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.cancel()
		m.wg.Wait()
		m.round <- struct{}{} // waits for a ProbeNow in progress; never given back
		for _, p := range m.primary {
			p.close()
		}
		for _, p := range m.replicas {
			p.close()
		}
	})
}

// ProbeNow runs one probe round and updates the snapshots before returning.
// It waits for a round already in progress to finish first. A round blocks
// for at most about (number of primary hosts + 1) ProbeTimeouts: primary
// hosts are tried one after another, then all replicas at once. ProbeNow
// returns early when ctx ends or the Monitor is closed, and then applies
// nothing from the interrupted round.
func (m *Monitor) ProbeNow(ctx context.Context) {
	if m.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	select {
	case m.round <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-m.round }()
	if ctx.Err() != nil {
		return
	}
	m.runRound(ctx)
}

// runRound probes the primary hosts, then all replicas concurrently, and
// applies the results. The caller holds the round token.
func (m *Monitor) runRound(ctx context.Context) {
	prim, primAt := m.probePrimary(ctx)

	samples := make([]sample, len(m.replicas))
	sampled := make([]point, len(m.replicas)) // when each replica was read
	var wg sync.WaitGroup
	for i, p := range m.replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := m.cfg.Now()
			row, err := p.query(ctx, m.probeTimeout, replicaQuery, 4)
			sampled[i] = point{before: before, after: m.cfg.Now()}
			if err == nil {
				samples[i], err = parseReplica(row)
			}
			if err != nil {
				p.close()
				samples[i] = sample{err: err}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // interrupted: the failures say nothing about the servers
	}
	now := m.cfg.Now()
	prim.LastProbe = now
	writable := prim.Up && !prim.InRecovery
	if writable {
		m.record(point{before: primAt.before, after: primAt.after, lsn: prim.CurrentLSN})
		for i := range samples {
			if s := &samples[i]; s.err == nil && s.replayKnown {
				s.win = m.window(s.replayLSN, sampled[i])
			}
		}
	}

	type change struct {
		st     ReplicaStatus
		reason string
	}
	var changes []change
	m.mu.Lock()
	primChanged := m.noWriter != !writable || (writable && m.prim.Host != prim.Host)
	m.noWriter = !writable
	m.prim = prim
	rotationChanged := false
	for i := range m.reps {
		st := &m.reps[i]
		if st.apply(samples[i], prim.CurrentLSN, writable, m.bounds, now) {
			rotationChanged = true
			changes = append(changes, change{st: st.status, reason: outReason(st.status, m.bounds)})
		}
		m.replay[i].Store(st.status.ReplayLSN)
	}
	if rotationChanged {
		in := make([]int, 0, len(m.reps))
		for i := range m.reps {
			if m.reps[i].status.InRotation {
				in = append(in, i)
			}
		}
		m.rotation.Store(&in)
	}
	m.mu.Unlock()

	if primChanged {
		if writable {
			m.log.Info("writable primary found", zap.String("host", prim.Host), zap.String("lsn", FormatLSN(prim.CurrentLSN)))
		} else {
			m.log.Warn("no writable primary", zap.String("error", prim.Err))
		}
	}
	for _, c := range changes {
		fields := []zap.Field{zap.String("replica", c.st.Name), zap.Int64("lag_bytes", c.st.LagBytes), zap.Float64("lag_seconds", c.st.LagSeconds)}
		if c.st.InRotation {
			m.log.Info("replica in rotation", fields...)
		} else {
			m.log.Warn("replica out of rotation", append(fields, zap.String("reason", c.reason))...)
		}
	}
}

// outReason says why a replica is out of rotation, for the log.
func outReason(s ReplicaStatus, b bounds) string {
	switch {
	case !s.Up:
		return "probe failed: " + s.Err
	case !s.InRecovery:
		return "not in recovery: promoted, no longer a replica"
	case b.over(s.LagBytes, s.LagSeconds):
		return "lag over bound"
	default:
		return "lag unknown or not yet back under half of the bounds"
	}
}

// record adds the writable primary's position of this round to hist. A
// position behind the last one (another server, restored from a backup)
// makes the earlier ones meaningless.
func (m *Monitor) record(p point) {
	if n := len(m.hist); n > 0 && p.lsn < m.hist[n-1].lsn {
		m.hist = m.hist[:0]
	}
	if len(m.hist) == m.histCap {
		m.hist = append(m.hist[:0], m.hist[1:]...)
	}
	m.hist = append(m.hist, p)
}

// window bounds the time lag of a replica whose replay position, read
// between at.before and at.after, was replay: it had everything the
// primary had written when the newest position in hist at or below replay
// was read, and lacked something the primary had written when the next
// one was read (seconds, by the Monitor's clock, to within the queries'
// round trips, and never below 0). With every position in hist above
// replay the lag is known only to be at least as old as the oldest.
func (m *Monitor) window(replay uint64, at point) window {
	h := m.hist
	if len(h) == 0 {
		return window{}
	}
	secs := func(d time.Duration) float64 { return max(d.Seconds(), 0) }
	for k := len(h) - 1; k >= 0; k-- {
		if h[k].lsn <= replay {
			w := window{hi: secs(at.after.Sub(h[k].before)), hiKnown: true}
			if k+1 < len(h) {
				w.lo = min(secs(at.before.Sub(h[k+1].after)), w.hi)
			}
			return w
		}
	}
	return window{lo: secs(at.before.Sub(h[0].after))}
}

// probePrimary tries the primary hosts in order and returns at the first
// writable one, with when its query ran (Config.Now).
func (m *Monitor) probePrimary(ctx context.Context) (PrimaryStatus, point) {
	var ps PrimaryStatus
	var errs []string
	if len(m.primary) == 0 {
		errs = append(errs, "no primary host configured")
	}
	for _, p := range m.primary {
		before := m.cfg.Now()
		row, err := p.query(ctx, m.probeTimeout, primaryQuery, 2)
		at := point{before: before, after: m.cfg.Now()}
		var r primaryRow
		if err == nil {
			r, err = parsePrimary(row)
		}
		if err != nil {
			p.close()
			errs = append(errs, err.Error())
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if !ps.Up {
			ps.Up, ps.Host = true, p.name
		}
		if r.inRecovery {
			errs = append(errs, fmt.Sprintf("%s: in recovery", p.name))
			continue
		}
		return PrimaryStatus{Up: true, Host: p.name, CurrentLSN: r.lsn}, at
	}
	ps.InRecovery = ps.Up
	ps.Err = "no writable primary: " + strings.Join(errs, "; ")
	return ps, point{}
}

// InRotation returns the indexes (into Config.Replicas) of the replicas
// currently eligible for reads, in ascending order. The slice is shared and
// must not be modified; it is replaced, not changed, when the set changes, so
// it stays valid and consistent for as long as the caller keeps it. It does
// not block or allocate.
func (m *Monitor) InRotation() []int { return *m.rotation.Load() }

// Status returns a snapshot of every replica, indexed like Config.Replicas.
// The slice is the caller's.
func (m *Monitor) Status() []ReplicaStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ReplicaStatus, len(m.reps))
	for i := range m.reps {
		out[i] = m.reps[i].status
	}
	return out
}

// PrimaryStatus returns a snapshot of the primary after the last round.
func (m *Monitor) PrimaryStatus() PrimaryStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.prim
}

// ReplayedPast reports whether replica i's last measured replay LSN is at
// least lsn, i.e. whether it has applied the commit at lsn (read-your-writes).
// Take lsn with pg_current_wal_insert_lsn() on the primary, on the session's
// server connection, right after the commit. It is false for an index out of
// range and before the replica's first successful probe. It does not block or
// allocate; it does not check rotation.
func (m *Monitor) ReplayedPast(i int, lsn uint64) bool {
	if i < 0 || i >= len(m.replay) {
		return false
	}
	v := m.replay[i].Load()
	return v != 0 && v >= lsn
}
