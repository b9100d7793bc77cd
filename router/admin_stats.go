// SHOW POOLS, STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS.

package router

import "time"

func (c *adminConsole) showPools(rs *resultSet) {
	rs.cols = poolsCols
	snap := c.srv.Snapshot()
	for _, p := range snap.Pools {
		st := p.Stat
		rs.add(p.Database, p.User,
			p.ClientsActive+p.ClientsIdle, p.ClientsWaiting, 0, 0,
			st.Active, 0, 0, st.Idle, 0, 0, st.Dialing,
			int64(st.MaxWait/time.Second), int64(st.MaxWait%time.Second/time.Microsecond),
			p.Mode, nil, p.Counters.PinnedClients, st.Paused)
	}
}

// dbStats sums a database's pools for SHOW STATS and friends.
type dbStats struct {
	name                                 string
	xacts, queries, xactUS, waitUS       uint64
	recv, sent, queryUS                  uint64
	assignments, cParses, sParses, binds uint64
	logins                               uint64
	waits                                uint64
}

// averages are PgBouncer's avg_* columns. PgBouncer averages over the last
// stats_period; pgferry keeps no periods and averages over its uptime:
// counts are per second, times are per transaction, query or wait.
type averages struct {
	xacts, queries, xactUS, queryUS, waitUS   uint64
	recv, sent                                uint64
	assignments, cParses, sParses, binds, log uint64
}

// showStats: bytes are client traffic; query time runs from a request to
// the server's ReadyForQuery.
func (c *adminConsole) showStats(rs *resultSet) {
	rs.cols = statsCols
	for _, d := range c.dbStats() {
		a := c.averages(d)
		rs.add(d.name, d.xacts, d.queries, d.recv, d.sent, d.xactUS, d.queryUS, d.waitUS,
			a.xacts, a.queries, a.recv, a.sent, a.xactUS, a.queryUS, a.waitUS,
			d.assignments, d.cParses, d.sParses, d.binds, d.logins,
			a.assignments, a.cParses, a.sParses, a.binds, a.log)
	}
}

func (c *adminConsole) showStatsSet(rs *resultSet, avg bool) {
	rs.cols = statsSetCols
	for _, d := range c.dbStats() {
		if avg {
			a := c.averages(d)
			rs.add(d.name, a.xacts, a.queries, a.recv, a.sent, a.xactUS, a.queryUS, a.waitUS,
				a.assignments, a.cParses, a.sParses, a.binds, a.log)
			continue
		}
		rs.add(d.name, d.xacts, d.queries, d.recv, d.sent, d.xactUS, d.queryUS, d.waitUS,
			d.assignments, d.cParses, d.sParses, d.binds, d.logins)
	}
}

func (c *adminConsole) showTotals(rs *resultSet) {
	rs.cols = totalsCols
	var t dbStats
	for _, d := range c.dbStats() {
		t.xacts += d.xacts
		t.queries += d.queries
		t.xactUS += d.xactUS
		t.waitUS += d.waitUS
		t.waits += d.waits
		t.assignments += d.assignments
		t.cParses += d.cParses
		t.sParses += d.sParses
		t.binds += d.binds
		t.logins += d.logins
		t.recv += d.recv
		t.sent += d.sent
		t.queryUS += d.queryUS
	}
	a := c.averages(t)
	for _, kv := range []struct {
		k string
		v uint64
	}{
		{"total_xact_count", t.xacts}, {"total_query_count", t.queries},
		{"total_received", t.recv}, {"total_sent", t.sent},
		{"total_xact_time", t.xactUS}, {"total_query_time", t.queryUS}, {"total_wait_time", t.waitUS},
		{"total_server_assignment_count", t.assignments},
		{"total_client_parse_count", t.cParses}, {"total_server_parse_count", t.sParses},
		{"total_bind_count", t.binds}, {"total_client_login_count", t.logins},
		{"avg_xact_count", a.xacts}, {"avg_query_count", a.queries},
		{"avg_recv", a.recv}, {"avg_sent", a.sent},
		{"avg_xact_time", a.xactUS}, {"avg_query_time", a.queryUS}, {"avg_wait_time", a.waitUS},
	} {
		rs.add(kv.k, kv.v)
	}
}
