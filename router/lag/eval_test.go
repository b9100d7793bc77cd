package lag

import (
	"errors"
	"testing"
	"time"
)

// step is one probe round fed to replicaState.apply.
type step struct {
	s          sample
	primaryLSN uint64
	noPrimary  bool
	wantIn     bool
}

// at returns a streaming replica sample whose replay and receive LSNs are
// lsn and whose last replayed commit is age seconds old.
func at(lsn uint64, age float64) sample {
	return sample{inRecovery: true, replayLSN: lsn, replayKnown: true, receiveLSN: lsn, receiveKnown: true, replayAge: age, ageKnown: true}
}

// behind is a replica that received more than it replayed.
func behind(replay, receive uint64, age float64) sample {
	s := at(replay, age)
	s.receiveLSN = receive
	return s
}

func TestReplicaRotationFollowsBoundsWithHysteresis(t *testing.T) {
	const mib = 1 << 20
	b := bounds{maxBytes: mib, maxLag: 10 * time.Second}
	down := sample{err: errors.New("dial server 127.0.0.1:1: connection refused")}
	promoted := sample{replayLSN: 100, replayKnown: true}

	tests := []struct {
		name  string
		steps []step
	}{
		{name: "first probe within bounds enters at once", steps: []step{
			{s: at(100, 0), primaryLSN: 100, wantIn: true},
		}},
		{name: "first probe between half and bound enters at once", steps: []step{
			{s: at(0, 0), primaryLSN: mib * 3 / 4, wantIn: true},
		}},
		{name: "first probe over a bound stays out", steps: []step{
			{s: at(0, 0), primaryLSN: 2 * mib},
		}},
		{name: "idle primary with old replay timestamp is not lag", steps: []step{
			{s: at(500, 3600), primaryLSN: 500, wantIn: true},
			{s: at(500, 3700), primaryLSN: 500, wantIn: true},
		}},
		{name: "received but not replayed counts the replay age", steps: []step{
			{s: at(500, 0), primaryLSN: 500, wantIn: true},
			{s: behind(500, 600, 11), primaryLSN: 600},
		}},
		{name: "byte lag over bound leaves at once and needs two probes under half", steps: []step{
			{s: at(0, 0), primaryLSN: 0, wantIn: true},
			{s: at(0, 1), primaryLSN: mib + 1},
			{s: at(mib/4, 1), primaryLSN: mib + 1},               // 0.75 MiB: under bound, over half
			{s: at(mib/2+1, 1), primaryLSN: mib + 1},             // exactly half: good 1
			{s: at(mib+1, 0), primaryLSN: mib + 1, wantIn: true}, // good 2
		}},
		{name: "between half and bound while in rotation stays in", steps: []step{
			{s: at(0, 0), primaryLSN: 0, wantIn: true},
			{s: at(0, 0), primaryLSN: mib, wantIn: true},
			{s: at(0, 9), primaryLSN: mib, wantIn: true},
		}},
		{name: "time lag over bound leaves, a bad probe resets the streak", steps: []step{
			{s: at(0, 0), primaryLSN: 0, wantIn: true},
			{s: behind(0, 10, 10.5), primaryLSN: 10},
			{s: behind(0, 10, 4), primaryLSN: 10}, // good 1
			{s: behind(0, 10, 6), primaryLSN: 10}, // over half: reset
			{s: behind(0, 10, 5), primaryLSN: 10}, // good 1
			{s: at(10, 0), primaryLSN: 10, wantIn: true},
		}},
		{name: "down leaves at once and comes back after two good probes", steps: []step{
			{s: at(1, 0), primaryLSN: 1, wantIn: true},
			{s: down, primaryLSN: 1},
			{s: at(1, 0), primaryLSN: 1},
			{s: at(1, 0), primaryLSN: 1, wantIn: true},
		}},
		{name: "down at first probe needs two good probes", steps: []step{
			{s: down, primaryLSN: 1},
			{s: at(1, 0), primaryLSN: 1},
			{s: at(1, 0), primaryLSN: 1, wantIn: true},
		}},
		{name: "promoted replica is out whatever its lag", steps: []step{
			{s: at(100, 0), primaryLSN: 100, wantIn: true},
			{s: promoted, primaryLSN: 100},
			{s: promoted, primaryLSN: 100},
			{s: promoted, primaryLSN: 100},
		}},
		{name: "unknown byte lag neither takes out nor brings back", steps: []step{
			{s: at(100, 0), primaryLSN: 100, wantIn: true},
			{s: at(100, 0), noPrimary: true, wantIn: true},
			{s: at(0, 0), primaryLSN: 2 * mib},
			{s: at(0, 0), noPrimary: true},
			{s: at(0, 0), noPrimary: true},
		}},
		{name: "no writable primary still applies the time bound", steps: []step{
			{s: at(100, 0), primaryLSN: 100, wantIn: true},
			{s: behind(100, 200, 30), noPrimary: true},
		}},
		{name: "replica ahead of the primary LSN read earlier is current", steps: []step{
			{s: at(200, 50), primaryLSN: 100, wantIn: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st replicaState
			now := time.Unix(1700000000, 0)
			for i, s := range tc.steps {
				now = now.Add(time.Second)
				st.apply(s.s, s.primaryLSN, !s.noPrimary, b, now)
				if st.status.InRotation != s.wantIn {
					t.Fatalf("step %d: InRotation = %v, want %v (status %+v)", i, st.status.InRotation, s.wantIn, st.status)
				}
				if !st.status.LastProbe.Equal(now) {
					t.Fatalf("step %d: LastProbe = %v, want %v", i, st.status.LastProbe, now)
				}
			}
		})
	}
}

func TestReplicaLagValues(t *testing.T) {
	b := bounds{}
	tests := []struct {
		name       string
		s          sample
		primaryLSN uint64
		noPrimary  bool
		wantBytes  int64
		wantSecs   float64
	}{
		{name: "current on idle primary", s: at(500, 3600), primaryLSN: 500, wantBytes: 0, wantSecs: 0},
		{name: "behind", s: behind(400, 450, 2.5), primaryLSN: 500, wantBytes: 100, wantSecs: 2.5},
		{name: "replayed all received but primary is ahead", s: at(400, 2.5), primaryLSN: 500, wantBytes: 100, wantSecs: 2.5},
		{name: "ahead of primary read", s: at(600, 9), primaryLSN: 500, wantBytes: 0, wantSecs: 0},
		{name: "no primary, drained", s: at(600, 9), noPrimary: true, wantBytes: -1, wantSecs: 0},
		{name: "no primary, receiving", s: behind(600, 700, 9), noPrimary: true, wantBytes: -1, wantSecs: 9},
		{name: "no commit replayed yet", s: sample{inRecovery: true, replayLSN: 1, replayKnown: true, receiveLSN: 2, receiveKnown: true}, primaryLSN: 5, wantBytes: 4, wantSecs: -1},
		{name: "negative age from clock skew", s: behind(1, 2, -0.2), primaryLSN: 5, wantBytes: 4, wantSecs: 0},
		{name: "down", s: sample{err: errors.New("x")}, primaryLSN: 5, wantBytes: -1, wantSecs: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st replicaState
			st.apply(tc.s, tc.primaryLSN, !tc.noPrimary, b, time.Time{})
			if st.status.LagBytes != tc.wantBytes || st.status.LagSeconds != tc.wantSecs {
				t.Fatalf("lag = %d bytes, %v s; want %d, %v", st.status.LagBytes, st.status.LagSeconds, tc.wantBytes, tc.wantSecs)
			}
		})
	}
}

func TestReplicaStatusKeepsReplayLSNWhileDown(t *testing.T) {
	var st replicaState
	st.apply(at(42, 0), 42, true, bounds{}, time.Time{})
	st.apply(sample{err: errors.New("connection refused")}, 50, true, bounds{}, time.Time{})
	if st.status.ReplayLSN != 42 || st.status.Up || st.status.Err != "connection refused" {
		t.Fatalf("status = %+v", st.status)
	}
}

// TestReplicaTimeLagStaysWithinWhatTheMonitorSaw: the replica's own measure
// of its lag (now() - pg_last_xact_replay_timestamp(), a replica clock
// minus a primary clock) is brought within the bounds the Monitor's
// observations set: a skewed clock or a long idle time before the commit
// not yet replayed does not make a replica a moment behind look late, and
// a clock running behind does not make a late one look current.
func TestReplicaTimeLagStaysWithinWhatTheMonitorSaw(t *testing.T) {
	b := bounds{maxBytes: 1 << 20, maxLag: 10 * time.Second}
	tests := []struct {
		name     string
		s        sample
		wantSecs float64
		wantIn   bool
	}{
		{name: "idle for an hour, then one commit not replayed yet", s: withWin(behind(500, 600, 3600), window{lo: 0, hi: 0.3, hiKnown: true}), wantSecs: 0.3, wantIn: true},
		{name: "replica clock 30 s ahead", s: withWin(behind(500, 600, 30.2), window{lo: 0.1, hi: 1.1, hiKnown: true}), wantSecs: 1.1, wantIn: true},
		{name: "replica clock 60 s behind", s: withWin(behind(500, 600, -40), window{lo: 19, hi: 20, hiKnown: true}), wantSecs: 19},
		{name: "behind every position kept", s: withWin(behind(500, 600, 2), window{lo: 25}), wantSecs: 25},
		{name: "no commit replayed yet", s: withWin(sample{inRecovery: true, replayLSN: 500, replayKnown: true, receiveLSN: 600, receiveKnown: true}, window{lo: 0.1, hi: 0.5, hiKnown: true}), wantSecs: 0.5, wantIn: true},
		{name: "age within the window is kept", s: withWin(behind(500, 600, 0.4), window{lo: 0.1, hi: 1.1, hiKnown: true}), wantSecs: 0.4, wantIn: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st replicaState
			st.apply(tc.s, 600, true, b, time.Time{})
			if st.status.LagSeconds != tc.wantSecs || st.status.InRotation != tc.wantIn {
				t.Fatalf("lag %v s, in rotation %v; want %v s, %v", st.status.LagSeconds, st.status.InRotation, tc.wantSecs, tc.wantIn)
			}
		})
	}
}

func withWin(s sample, w window) sample {
	s.win = w
	return s
}

func TestMonitorWindowBoundsTheLagByThePrimaryPositionsItRead(t *testing.T) {
	base := time.Unix(1700000000, 0)
	at := func(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }
	m := New(Config{MaxLag: 10 * time.Second, Interval: time.Second})
	defer m.Close()
	for i, lsn := range []uint64{100, 200, 300} {
		m.record(point{before: at(float64(i)), after: at(float64(i) + 0.1), lsn: lsn})
	}
	read := point{before: at(2.2), after: at(2.3)}
	tests := []struct {
		name   string
		replay uint64
		want   window
	}{
		{name: "has the newest position", replay: 300, want: window{hi: 0.3, hiKnown: true}},
		{name: "between the last two", replay: 250, want: window{lo: 0.1, hi: 1.3, hiKnown: true}},
		{name: "at the oldest", replay: 100, want: window{lo: 1.1, hi: 2.3, hiKnown: true}},
		{name: "behind all", replay: 50, want: window{lo: 2.1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := m.window(tc.replay, read)
			if !near(got.lo, tc.want.lo) || !near(got.hi, tc.want.hi) || got.hiKnown != tc.want.hiKnown {
				t.Fatalf("window = %+v, want %+v", got, tc.want)
			}
		})
	}
	// A position behind the last: another server; the old ones are dropped.
	m.record(point{before: at(3), after: at(3.1), lsn: 10})
	if got := m.window(50, point{before: at(3.2), after: at(3.3)}); !got.hiKnown || !near(got.hi, 0.3) || got.lo != 0 {
		t.Fatalf("after the primary's position went back: window = %+v", got)
	}
	// The kept positions are bounded.
	for i := range 2 * maxHist {
		m.record(point{lsn: uint64(1000 + i)})
	}
	if len(m.hist) != m.histCap || m.histCap != 24 {
		t.Fatalf("%d positions kept, cap %d; want 24 (2 x max_replica_lag / interval + 4)", len(m.hist), m.histCap)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
