// SHOW POOLS, LISTS, STATE and REPLICAS.

package admin

import "time"

func (c *Console) showPools(rs *resultSet) {
	rs.cols = poolsCols
	for _, p := range c.b.Snapshot().Pools {
		st := p.Stat
		rs.add(p.Database, p.User,
			p.ClientsActive+p.ClientsIdle, p.ClientsWaiting, 0, 0,
			st.Active, 0, 0, st.Idle, 0, 0, st.Dialing,
			int64(st.MaxWait/time.Second), int64(st.MaxWait%time.Second/time.Microsecond),
			p.Mode, nil, p.Counters.PinnedClients, st.Paused)
	}
}

func (c *Console) showLists(rs *resultSet) {
	rs.cols = listsCols
	cfg := c.b.Config()
	snap := c.b.Snapshot()
	logged, servers := snap.AdminClients, 0
	for _, p := range snap.Pools {
		logged += p.ClientsActive + p.ClientsIdle + p.ClientsWaiting
		servers += p.Stat.Total
	}
	for _, kv := range []struct {
		k string
		v int
	}{
		// PgBouncer 1.25's rows and order (admin.c admin_show_lists);
		// pgferry keeps no pools for peers, which only take cancels.
		{"databases", len(cfg.Databases)}, {"users", len(cfg.Users)}, {"peers", len(cfg.Peers)},
		{"pools", len(snap.Pools)}, {"peer_pools", 0},
		{"free_clients", 0}, {"used_clients", int(snap.Clients)}, {"login_clients", max(0, int(snap.Clients)-logged)},
		{"free_servers", 0}, {"used_servers", servers},
		{"dns_names", 0}, {"dns_zones", 0}, {"dns_queries", 0}, {"dns_pending", 0},
	} {
		rs.add(kv.k, kv.v)
	}
}

// showState answers SHOW STATE as PgBouncer 1.19+ does (admin.c
// admin_show_state): whether the pooler is active, paused (PAUSE without a
// database; a database paused on its own does not count) or suspended
// (never, in pgferry). A draining pgferry is not active.
func (c *Console) showState(rs *resultSet) {
	rs.cols = keyValueCols
	paused := c.b.PauseState().paused()
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	rs.add("active", yes(!paused && !c.b.Draining()))
	rs.add("paused", yes(paused))
	rs.add("suspended", "no")
}

// showReplicas lists each read replica with the lag monitor's view:
// state is "in rotation", "lagging" (up, over a bound) or "down".
func (c *Console) showReplicas(rs *resultSet) {
	rs.cols = replicasCols
	for _, p := range c.b.Snapshot().Pools {
		for _, r := range p.Replicas {
			state := "down"
			switch {
			case r.Status.InRotation:
				state = "in rotation"
			case r.Status.Up && !r.Status.InRecovery:
				state = "promoted"
			case r.Status.Up:
				state = "lagging"
			}
			probe := ""
			if !r.Status.LastProbe.IsZero() {
				probe = r.Status.LastProbe.UTC().Format("2006-01-02 15:04:05.000 MST")
			}
			rs.add(p.Database, p.User, r.Name, state, r.Status.LagBytes, r.Status.LagSeconds,
				r.Stat.Active, r.Stat.Idle, r.Stat.Dialing, r.Stat.Waiting, probe, r.Status.Err)
		}
	}
}
