package lag

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

const (
	mib         = 1 << 20
	waitTimeout = 30 * time.Second
)

func hostPort(c *pgtest.Cluster) string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// dialTo reaches c as the application role, without TLS.
func dialTo(hosts ...string) pool.DialConfig {
	return pool.DialConfig{
		Hosts:          hosts,
		Database:       pgtest.AppDatabase,
		User:           pgtest.AppUser,
		Password:       pool.StaticPassword(pgtest.AppPassword),
		SSLMode:        pool.SSLDisable,
		ConnectTimeout: 5 * time.Second,
	}
}

// newMonitor returns a Monitor of p with replica r, bounds of 1 MiB and 5s,
// closed in t.Cleanup.
func newMonitor(t *testing.T, p, r *pgtest.Cluster) *Monitor {
	t.Helper()
	m := New(Config{
		Primary:      dialTo(hostPort(p)),
		Replicas:     []Replica{{Name: "r1", Dial: dialTo(hostPort(r)), Weight: 1}},
		MaxLagBytes:  mib,
		MaxLag:       5 * time.Second,
		Interval:     100 * time.Millisecond,
		ProbeTimeout: 5 * time.Second, // generous: -race and a busy CI machine
	})
	t.Cleanup(m.Close)
	return m
}

// probeUntil runs ProbeNow until cond holds, failing the test after
// waitTimeout. It returns how many rounds it ran.
func probeUntil(t *testing.T, m *Monitor, what string, cond func() bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n := 1; ; n++ {
		m.ProbeNow(ctx)
		if cond() {
			return n
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: primary %+v, replicas %+v", what, m.PrimaryStatus(), m.Status())
		case <-tick.C:
		}
	}
}

func inRotation(m *Monitor, i int) bool { return slices.Contains(m.InRotation(), i) }

// insertLSN returns the primary's pg_current_wal_insert_lsn() after running
// sql there.
func insertLSN(t *testing.T, c *pgtest.Cluster, sql string) uint64 {
	t.Helper()
	ctx := context.Background()
	if sql != "" {
		if err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	n, err := c.QueryInt(ctx, "select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
	if err != nil {
		t.Fatal(err)
	}
	return uint64(n)
}

func TestReplicaOfIdlePrimaryIsInRotationWithZeroLag(t *testing.T) {
	m := newMonitor(t, primary, replica)
	m.ProbeNow(context.Background())
	if !inRotation(m, 0) {
		t.Fatalf("after the first probe the replica is not in rotation: %+v", m.Status())
	}
	// Background WAL (a standby snapshot, a checkpoint) may be in flight:
	// poll until the replica has caught up.
	probeUntil(t, m, "zero lag", func() bool {
		s := m.Status()[0]
		return s.LagBytes == 0 && s.LagSeconds == 0
	})
	s := m.Status()[0]
	if !s.Up || !s.InRecovery || !s.InRotation || s.Name != "r1" || s.ReplayLSN == 0 || s.Err != "" || s.LastProbe.IsZero() {
		t.Fatalf("replica status = %+v", s)
	}
	ps := m.PrimaryStatus()
	if !ps.Up || ps.InRecovery || ps.Host != hostPort(primary) || ps.CurrentLSN < s.ReplayLSN || ps.Err != "" {
		t.Fatalf("primary status = %+v", ps)
	}
	if got := m.InRotation(); !slices.Equal(got, []int{0}) {
		t.Fatalf("InRotation = %v", got)
	}
}

func TestReplicaWithPausedReplayLeavesRotationAndReturnsAfterHysteresis(t *testing.T) {
	ctx := context.Background()
	m := newMonitor(t, primary, replica)
	probeUntil(t, m, "replica in rotation", func() bool { return inRotation(m, 0) })

	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = replica.Exec(context.Background(), "select pg_wal_replay_resume()")
		}
	})
	t.Cleanup(func() { _ = primary.Exec(context.Background(), "drop table if exists lag_paused") })
	lsn := insertLSN(t, primary, "create table lag_paused as select generate_series(1, 200000) as n")

	m.ProbeNow(ctx)
	s := m.Status()[0]
	if s.InRotation || inRotation(m, 0) || s.LagBytes <= mib || !s.Up {
		t.Fatalf("paused replica with ~7 MB to replay: status %+v, InRotation %v", s, m.InRotation())
	}
	if m.ReplayedPast(0, lsn) {
		t.Fatalf("ReplayedPast(%s) with replay paused at %s", FormatLSN(lsn), FormatLSN(s.ReplayLSN))
	}

	if err := replica.Exec(ctx, "select pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	resumed = true
	// Record every round until the replica is back: the first round under
	// half of the bounds must not yet bring it back.
	var underHalf []bool
	probeUntil(t, m, "replica back in rotation", func() bool {
		s := m.Status()[0]
		underHalf = append(underHalf, s.LagBytes >= 0 && s.LagBytes <= mib/2 && s.LagSeconds >= 0 && s.LagSeconds <= 2.5)
		return s.InRotation
	})
	n := len(underHalf)
	if n < 2 || !underHalf[n-1] || !underHalf[n-2] {
		t.Fatalf("back in rotation without 2 probes under half the bounds: %v", underHalf)
	}
	if !m.ReplayedPast(0, lsn) {
		t.Fatalf("ReplayedPast(%s) false after catching up: %+v", FormatLSN(lsn), m.Status()[0])
	}
}

func TestReplayedPastComparesWithCommitInsertLSN(t *testing.T) {
	m := newMonitor(t, primary, replica)
	if m.ReplayedPast(0, 1) {
		t.Fatal("ReplayedPast before any probe")
	}
	t.Cleanup(func() { _ = primary.Exec(context.Background(), "drop table if exists lag_ryw") })
	lsn := insertLSN(t, primary, "create table lag_ryw as select 1 as n")
	probeUntil(t, m, "replay past the commit", func() bool { return m.ReplayedPast(0, lsn) })
	if got := m.Status()[0].ReplayLSN; got < lsn {
		t.Fatalf("ReplayLSN %s < %s", FormatLSN(got), FormatLSN(lsn))
	}
	tests := []struct {
		name string
		i    int
		lsn  uint64
		want bool
	}{
		{name: "commit", i: 0, lsn: lsn, want: true},
		{name: "far future", i: 0, lsn: lsn + 1<<40, want: false},
		{name: "negative index", i: -1, lsn: 0, want: false},
		{name: "index out of range", i: 1, lsn: 0, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := m.ReplayedPast(tc.i, tc.lsn); got != tc.want {
				t.Fatalf("ReplayedPast(%d, %s) = %v", tc.i, FormatLSN(tc.lsn), got)
			}
		})
	}
}

func TestStoppedReplicaIsOutOfRotationAndReturnsAfterRestart(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	m := New(Config{
		Primary:      dialTo(hostPort(primary)),
		Replicas:     []Replica{{Name: "r1", Dial: dialTo(hostPort(replica))}},
		MaxLagBytes:  mib,
		Interval:     100 * time.Millisecond,
		ProbeTimeout: 5 * time.Second,
		Logger:       zap.New(core),
	})
	t.Cleanup(m.Close)
	probeUntil(t, m, "replica in rotation", func() bool { return inRotation(m, 0) })

	if err := replica.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := replica.Restart(); err != nil {
				t.Error(err)
			}
		}
	})
	m.ProbeNow(context.Background())
	s := m.Status()[0]
	if s.Up || s.InRotation || len(m.InRotation()) != 0 || s.Err == "" || s.LagBytes != -1 {
		t.Fatalf("stopped replica: %+v, InRotation %v", s, m.InRotation())
	}
	if !strings.Contains(s.Err, hostPort(replica)) {
		t.Fatalf("Err %q does not name the replica's address", s.Err)
	}
	m.ProbeNow(context.Background())
	out := logs.FilterMessage("replica out of rotation").FilterField(zap.String("replica", "r1")).All()
	if len(out) != 1 || out[0].Level != zap.WarnLevel || out[0].ContextMap()["component"] != "lag" {
		t.Fatalf("want one warning when the replica left rotation, got %+v", out)
	}

	if err := replica.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	probeUntil(t, m, "restarted replica in rotation", func() bool { return inRotation(m, 0) })
	if s := m.Status()[0]; !s.Up || !s.InRecovery || s.Err != "" {
		t.Fatalf("restarted replica: %+v", s)
	}
}

func TestUnreachableReplicaAndCanceledProbe(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := New(Config{
		Primary:  dialTo(hostPort(primary)),
		Replicas: []Replica{{Name: "gone", Dial: dialTo(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))}},
		Now:      func() time.Time { return clock },
	})
	t.Cleanup(m.Close)

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	m.ProbeNow(canceled)
	if s := m.Status()[0]; !s.LastProbe.IsZero() || s.LagBytes != -1 || m.PrimaryStatus().Up {
		t.Fatalf("a canceled round changed the status: %+v, %+v", s, m.PrimaryStatus())
	}

	m.ProbeNow(context.Background())
	s := m.Status()[0]
	if s.Up || s.InRotation || !strings.Contains(s.Err, "refused") || !s.LastProbe.Equal(clock) {
		t.Fatalf("unreachable replica: %+v", s)
	}
	if ps := m.PrimaryStatus(); !ps.Up || !ps.LastProbe.Equal(clock) {
		t.Fatalf("primary: %+v", ps)
	}
	if strings.Contains(s.Err, pgtest.AppPassword) {
		t.Fatalf("Err echoes the password: %q", s.Err)
	}
}

func TestStartProbesInBackgroundUntilClose(t *testing.T) {
	m := newMonitor(t, primary, replica)
	m.Start()
	m.Start() // no second loop
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var first time.Time
	for {
		s := m.Status()[0]
		if first.IsZero() {
			first = s.LastProbe
		}
		// In rotation, and a later round has run since.
		if s.InRotation && !first.IsZero() && s.LastProbe.After(first) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("background probing did not run: %+v", m.Status())
		case <-tick.C:
		}
	}
	m.Close()
	m.Close()
	m.Start() // after Close: nothing
	before := m.Status()[0].LastProbe
	m.ProbeNow(context.Background()) // after Close: returns at once
	if got := m.Status()[0].LastProbe; !got.Equal(before) {
		t.Fatalf("ProbeNow after Close probed: %v -> %v", before, got)
	}
}

// TestPrimaryHostListFindsWritableServerAndFollowsPromotion has its own
// primary and replica, since it promotes the replica.
func TestPrimaryHostListFindsWritableServerAndFollowsPromotion(t *testing.T) {
	p, err := pgtest.Start(pgtest.Options{Replication: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	r, err := p.StartReplica(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{
		// The replica first: the monitor must skip it as not writable.
		Primary:      dialTo(hostPort(r), hostPort(p)),
		Replicas:     []Replica{{Name: "r", Dial: dialTo(hostPort(r))}},
		MaxLagBytes:  mib,
		Interval:     100 * time.Millisecond,
		ProbeTimeout: 5 * time.Second,
	})
	t.Cleanup(m.Close)
	ctx := context.Background()

	probeUntil(t, m, "replica in rotation", func() bool { return inRotation(m, 0) })
	if ps := m.PrimaryStatus(); !ps.Up || ps.InRecovery || ps.Host != hostPort(p) || ps.CurrentLSN == 0 {
		t.Fatalf("primary status with [replica, primary] = %+v", ps)
	}

	// Old primary gone: the replica answers but is read-only.
	if err := p.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	m.ProbeNow(ctx)
	ps := m.PrimaryStatus()
	if !ps.Up || !ps.InRecovery || ps.Host != hostPort(r) || ps.CurrentLSN != 0 || !strings.Contains(ps.Err, "no writable primary") {
		t.Fatalf("primary status with the primary down = %+v", ps)
	}
	if s := m.Status()[0]; s.LagBytes != -1 || !s.Up || !s.InRotation {
		t.Fatalf("replica with no primary known: %+v (want unknown byte lag, still in rotation)", s)
	}

	if err := r.Promote(); err != nil {
		t.Fatal(err)
	}
	m.ProbeNow(ctx)
	ps = m.PrimaryStatus()
	if !ps.Up || ps.InRecovery || ps.Host != hostPort(r) || ps.CurrentLSN == 0 || ps.Err != "" {
		t.Fatalf("primary status after promotion = %+v", ps)
	}
	if s := m.Status()[0]; !s.Up || s.InRecovery || s.InRotation || len(m.InRotation()) != 0 {
		t.Fatalf("promoted replica must leave rotation: %+v", s)
	}
}

func TestInRotationAndReplayedPastDoNotAllocate(t *testing.T) {
	m := New(Config{Replicas: []Replica{{Name: "a"}, {Name: "b"}}})
	defer m.Close()
	if n := testing.AllocsPerRun(100, func() {
		_ = m.InRotation()
		_ = m.ReplayedPast(1, 42)
	}); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

// A probe connection outlives its round even when its read deadline (the
// probe timeout) has passed by the next one: the liveness check before
// reuse ignores deadlines, so each server sees one login, not one a round.
func TestProbeKeepsItsConnectionAcrossRoundsLongerThanTheProbeTimeout(t *testing.T) {
	const timeout = time.Second
	const name = "lag probe reuse test"
	dial := dialTo(hostPort(replica))
	dial.Params = []protocol.Param{{Key: "application_name", Value: name}}
	m := New(Config{
		Primary:      dialTo(hostPort(primary)),
		Replicas:     []Replica{{Name: "r1", Dial: dial}},
		MaxLagBytes:  mib,
		Interval:     time.Hour, // rounds only by ProbeNow
		ProbeTimeout: timeout,
	})
	t.Cleanup(m.Close)
	ctx := context.Background()
	probePID := func() int64 {
		t.Helper()
		pid, err := replica.QueryInt(ctx, "select coalesce(max(pid), 0) from pg_stat_activity where application_name = $1", name)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	probeUntil(t, m, "replica in rotation", func() bool { return inRotation(m, 0) })
	first := probePID()
	if first == 0 {
		t.Fatal("no probe connection on the replica after a round")
	}
	time.Sleep(timeout + 200*time.Millisecond) // the deadline the round set has passed
	m.ProbeNow(ctx)
	if s := m.Status()[0]; !s.Up || s.Err != "" {
		t.Fatalf("replica after the second round: %+v", s)
	}
	if again := probePID(); again != first {
		t.Fatalf("the probe logged in again (backend pid %d, was %d): its connection was not reused", again, first)
	}
}
