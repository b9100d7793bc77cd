package lag

import "time"

// comebackProbes is how many consecutive probes at most half of each bound a
// replica needs to re-enter rotation.
const comebackProbes = 2

// sample is what one probe of a replica measured.
type sample struct {
	err          error // probe failed; the other fields are unset
	inRecovery   bool
	replayLSN    uint64
	replayKnown  bool // pg_last_wal_replay_lsn() was not NULL
	receiveLSN   uint64
	receiveKnown bool    // pg_last_wal_receive_lsn() was not NULL
	replayAge    float64 // seconds since the last replayed commit, replica clock
	ageKnown     bool    // pg_last_xact_replay_timestamp() was not NULL
	// win bounds the time lag by the Monitor's own clock (Monitor.window);
	// zero (no bound) when no writable primary was found in the round.
	win window
}

// window is what the Monitor's own observations say of a replica's time
// lag: the primary's positions it read, and when (Monitor.hist), against
// the replica's replay position. They need no server's clock, unlike
// now() - pg_last_xact_replay_timestamp(), which subtracts a commit time
// stamped by the primary's clock from the replica's, and which counts the
// whole idle time before a commit a replica has not replayed yet.
type window struct {
	lo      float64 // the lag is at least this many seconds (0: no bound)
	hi      float64 // the lag is at most this many seconds, when hiKnown
	hiKnown bool
}

// clamp brings v, a time lag measured otherwise, within w.
func (w window) clamp(v float64) float64 {
	v = max(v, w.lo)
	if w.hiKnown {
		v = min(v, w.hi)
	}
	return v
}

// bounds are the rotation limits; 0 means no limit.
type bounds struct {
	maxBytes int64
	maxLag   time.Duration
}

// over reports whether a known lag is strictly over its bound.
func (b bounds) over(lagBytes int64, lagSeconds float64) bool {
	return (b.maxBytes > 0 && lagBytes > b.maxBytes) ||
		(b.maxLag > 0 && lagSeconds > b.maxLag.Seconds())
}

// within reports whether each set bound is met by a known lag no larger than
// frac of it.
func (b bounds) within(lagBytes int64, lagSeconds float64, frac float64) bool {
	if b.maxBytes > 0 && (lagBytes < 0 || float64(lagBytes) > float64(b.maxBytes)*frac) {
		return false
	}
	if b.maxLag > 0 && (lagSeconds < 0 || lagSeconds > b.maxLag.Seconds()*frac) {
		return false
	}
	return true
}

// replicaState is one replica's status plus the hysteresis counters. It is
// guarded by Monitor.mu.
type replicaState struct {
	status ReplicaStatus
	probed bool // a probe has been applied (first-probe rule)
	good   int  // consecutive probes under half of each bound while out of rotation
}

// apply folds one probe into st. primaryLSN is the writable primary's current
// LSN from the same round, primaryKnown false when none was found. It returns
// whether the replica's rotation changed.
func (st *replicaState) apply(s sample, primaryLSN uint64, primaryKnown bool, b bounds, now time.Time) (changed bool) {
	was := st.status.InRotation
	first := !st.probed
	st.probed = true
	rs := &st.status
	rs.LastProbe = now

	if s.err != nil {
		rs.Up, rs.Err = false, s.err.Error()
		rs.LagBytes, rs.LagSeconds = -1, -1
		rs.InRotation, st.good = false, 0
		return was
	}
	rs.Up, rs.Err, rs.InRecovery = true, "", s.inRecovery
	if s.replayKnown {
		rs.ReplayLSN = s.replayLSN
	}

	rs.LagBytes = -1
	if primaryKnown && s.replayKnown {
		rs.LagBytes = 0
		if primaryLSN > s.replayLSN {
			rs.LagBytes = int64(primaryLSN - s.replayLSN)
		}
	}
	// Everything received has been replayed. Without a receive LSN (WAL from
	// an archive, say) only the byte lag can tell.
	drained := s.replayKnown && (!s.receiveKnown || s.receiveLSN <= s.replayLSN)
	switch {
	case drained && rs.LagBytes == 0,
		drained && rs.LagBytes < 0 && s.receiveKnown:
		rs.LagSeconds = 0
	case s.ageKnown:
		rs.LagSeconds = s.win.clamp(max(s.replayAge, 0))
	case s.win.hiKnown:
		rs.LagSeconds = s.win.hi
	default:
		rs.LagSeconds = -1
	}

	switch {
	case !s.inRecovery:
		rs.InRotation, st.good = false, 0
	case first:
		rs.InRotation = b.within(rs.LagBytes, rs.LagSeconds, 1)
		st.good = 0
	case rs.InRotation:
		if b.over(rs.LagBytes, rs.LagSeconds) {
			rs.InRotation = false
		}
		st.good = 0
	default:
		if b.within(rs.LagBytes, rs.LagSeconds, 0.5) {
			st.good++
		} else {
			st.good = 0
		}
		if st.good >= comebackProbes {
			rs.InRotation, st.good = true, 0
		}
	}
	return was != rs.InRotation
}
