// Package lag measures how far each streaming replica is behind its primary
// and decides which replicas are in rotation, that is, eligible for read-only
// transactions. The router asks it which replicas it may use (InRotation) and
// whether a replica has replayed a client's last commit (ReplayedPast); the
// admin console and metrics read snapshots (Status, PrimaryStatus).
//
// # Probing
//
// A Monitor keeps one probe connection per server open (pool.Dial, simple
// query protocol, DataRow text values parsed here) and reopens it on the next
// round after any failure. Each probe query has a deadline (Config.ProbeTimeout,
// default min(Interval, 2s)) covering dial, login and query; a failed probe
// closes its connection. Start runs one background goroutine that probes at
// once and then every Interval; ProbeNow runs one round synchronously. Rounds
// never overlap.
//
// Each round first finds the writable primary. Config.Primary may list several
// hosts (each may be "host:port"); they are probed in order with
//
//	select pg_is_in_recovery(),
//	       case when pg_is_in_recovery() then null else pg_current_wal_lsn() end
//
// and the first host that answers pg_is_in_recovery() = false is the primary
// (PrimaryStatus.Host). pg_current_wal_lsn() raises an error during recovery
// (PostgreSQL docs, "Backup Control Functions"), hence the CASE. When no host
// is writable, PrimaryStatus says so (Up reports whether any host answered,
// InRecovery that all that answered are in recovery) and a warning is logged
// when that state begins.
//
// Then every replica is probed, concurrently, with
//
//	select pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(),
//	       extract(epoch from now() - pg_last_xact_replay_timestamp())
//
// # Lag
//
//   - Byte lag = the primary's pg_current_wal_lsn() minus the replica's
//     pg_last_wal_replay_lsn(), both from the same round, never below 0. It is
//     unknown (-1) when no writable primary was found in that round.
//   - Time lag = 0 when the replica has replayed all it received (receive LSN
//     <= replay LSN, or no receive LSN) and the byte lag is 0: on an idle
//     primary nothing new is replayed and now() - pg_last_xact_replay_timestamp()
//     grows forever although the replica is current. Otherwise it is that age,
//     brought within what the Monitor itself saw: it keeps the primary's
//     position from the last rounds (enough to span twice MaxLag, 16 to 1024
//     of them) with the time it read each (Config.Now), and a replica that
//     has replayed the position read at t1 but not the one read at t2 is
//     between now - t2 and now - t1 behind. That age subtracts a commit time
//     stamped by the primary's clock from the replica's clock, so a skewed
//     clock moves it; and after an idle spell it counts the whole idle time
//     while the replica has not yet replayed the commit that ended it, which
//     would take a replica a moment behind out of rotation. Without the age
//     (no transaction replayed since the replica started) the upper bound is
//     the lag. With no writable primary known, a replica whose WAL receiver
//     reports that everything received is replayed also counts as 0: nothing
//     newer is known; otherwise the age is taken as it is. Unknown (-1) when
//     neither gives a value.

// # Rotation
//
// A replica is out of rotation when its probe fails (Up = false), when it is
// not in recovery (it was promoted and is no longer a replica of this
// primary), or when its lag is over either bound (MaxLagBytes, MaxLag; 0 means
// no bound). Hysteresis keeps it from flapping:
//
//   - It leaves rotation at once when a probe fails, it is not in recovery, or
//     a lag is strictly over its bound.
//   - It comes back only after 2 consecutive probes in which it was up, in
//     recovery and at most half of each bound.
//   - An unknown lag never takes a replica out and never brings it back for a
//     bound that is set.
//   - At its very first probe a replica enters rotation at once if it is up,
//     in recovery and within both bounds: there is no history to flap against.
//
// # Read-your-writes
//
// ReplayedPast(i, lsn) compares the replica's last measured replay LSN with an
// LSN the router took on the primary right after a client's commit, on the
// same server connection, with pg_current_wal_insert_lsn() (not
// pg_current_wal_lsn(): with synchronous_commit = off the write position can
// still be behind the commit record). The measurement is at most one round
// old, so the answer errs on the safe side: false while in doubt.
//
// # Clock
//
// Config.Now stamps LastProbe and the primary positions the time lag is
// bounded by, so the bounds need no server's clock. Socket deadlines use the
// real clock, since the kernel does.
//
// Package lag uses pool and protocol; it must not import router, configs,
// metrics or prometheus.
package lag
