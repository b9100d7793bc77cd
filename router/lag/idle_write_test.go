package lag

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// stepClock is a Config.Now that moves 10 ms on at every reading, safe for
// the concurrent replica probes.
func stepClock() func() time.Time {
	var ticks atomic.Int64
	base := time.Unix(1700000000, 0)
	return func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * 10 * time.Millisecond) }
}

// TestAReplicaOneFreshCommitBehindAnIdlePrimaryIsNotLate: after the primary
// was idle for longer than max_replica_lag, its next commit reaches a
// replica that has not replayed it yet (here: replay paused). The replica
// is a moment behind, not as far behind as its last replayed commit is old
// (now() - pg_last_xact_replay_timestamp()), so it stays in rotation.
func TestAReplicaOneFreshCommitBehindAnIdlePrimaryIsNotLate(t *testing.T) {
	ctx := context.Background()
	m := New(Config{
		Primary:      dialTo(hostPort(primary)),
		Replicas:     []Replica{{Name: "r1", Dial: dialTo(hostPort(replica)), Weight: 1}},
		MaxLagBytes:  mib,
		MaxLag:       time.Second,
		Interval:     100 * time.Millisecond,
		ProbeTimeout: 5 * time.Second,
		Now:          stepClock(),
	})
	t.Cleanup(m.Close)
	t.Cleanup(func() { _ = primary.Exec(context.Background(), "drop table if exists lag_idle_write") })
	if err := primary.Exec(ctx, "create table lag_idle_write (x int)"); err != nil {
		t.Fatal(err)
	}
	probeUntil(t, m, "the replica current and in rotation", func() bool {
		s := m.Status()[0]
		return s.InRotation && s.LagBytes == 0 && s.LagSeconds == 0
	})
	// The primary idle: the last commit the replica replayed grows old.
	probeUntil(t, m, "the replica's last replayed commit to be 3 s old", func() bool {
		age, err := replica.QueryInt(ctx, "select floor(extract(epoch from now() - pg_last_xact_replay_timestamp()))::bigint")
		if err != nil {
			t.Fatal(err)
		}
		return age >= 3
	})
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replica.Exec(context.Background(), "select pg_wal_replay_resume()") })
	m.ProbeNow(ctx)
	lsn := insertLSN(t, primary, "insert into lag_idle_write values (1)")
	probeUntil(t, m, "the replica to receive the commit", func() bool {
		got, err := replica.QueryInt(ctx, "select (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint")
		if err != nil {
			t.Fatal(err)
		}
		return uint64(got) >= lsn
	})
	m.ProbeNow(ctx)
	s := m.Status()[0]
	if !s.InRotation || s.LagSeconds < 0 || s.LagSeconds > 1 {
		t.Fatalf("a replica one fresh commit behind: status %+v; want in rotation with a lag under a second", s)
	}
}
