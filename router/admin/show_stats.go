// SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS.

package admin

import "time"

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

func (c *Console) dbStats() []dbStats {
	var out []dbStats
	for _, p := range c.b.Snapshot().Pools { // sorted by database
		if len(out) == 0 || out[len(out)-1].name != p.Database {
			out = append(out, dbStats{name: p.Database})
		}
		d := &out[len(out)-1]
		d.xacts += p.Counters.Transactions
		d.queries += p.Counters.Queries
		d.xactUS += uint64(p.Counters.TransactionTime / time.Microsecond)
		d.waitUS += uint64(p.Stat.WaitTime / time.Microsecond)
		d.waits += p.Stat.WaitCount
		d.assignments += p.Stat.AcquireCount
		d.cParses += p.Counters.ClientParses
		d.sParses += p.Counters.ServerParses
		d.binds += p.Counters.Binds
		d.logins += p.Counters.ClientLogins
		d.recv += p.Counters.BytesReceived
		d.sent += p.Counters.BytesSent
		d.queryUS += uint64(p.Counters.QueryTime / time.Microsecond)
	}
	return out
}

func (c *Console) averages(d dbStats) averages {
	secs := uint64(time.Since(c.b.Started()) / time.Second)
	rate := func(n uint64) uint64 {
		if secs == 0 {
			return n
		}
		return n / secs
	}
	per := func(total, n uint64) uint64 {
		if n == 0 {
			return 0
		}
		return total / n
	}
	return averages{
		xacts: rate(d.xacts), queries: rate(d.queries),
		xactUS: per(d.xactUS, d.xacts), queryUS: per(d.queryUS, d.queries), waitUS: per(d.waitUS, d.waits),
		recv: rate(d.recv), sent: rate(d.sent),
		assignments: rate(d.assignments), cParses: rate(d.cParses), sParses: rate(d.sParses),
		binds: rate(d.binds), log: rate(d.logins),
	}
}

// showStats: bytes are client traffic; query time runs from a request to
// the server's ReadyForQuery.
func (c *Console) showStats(rs *resultSet) {
	rs.cols = statsCols
	for _, d := range c.dbStats() {
		a := c.averages(d)
		rs.add(d.name, d.assignments, d.xacts, d.queries, d.recv, d.sent, d.xactUS, d.queryUS, d.waitUS,
			d.cParses, d.sParses, d.binds,
			a.assignments, a.xacts, a.queries, a.recv, a.sent, a.xactUS, a.queryUS, a.waitUS,
			a.cParses, a.sParses, a.binds,
			d.logins, a.log)
	}
}

func (c *Console) showStatsSet(rs *resultSet, avg bool) {
	rs.cols = statsSetCols
	if avg {
		rs.cols = statsAvgCols
	}
	for _, d := range c.dbStats() {
		if avg {
			a := c.averages(d)
			rs.add(d.name, a.assignments, a.xacts, a.queries, a.recv, a.sent, a.xactUS, a.queryUS, a.waitUS,
				a.cParses, a.sParses, a.binds, a.log)
			continue
		}
		rs.add(d.name, d.assignments, d.xacts, d.queries, d.recv, d.sent, d.xactUS, d.queryUS, d.waitUS,
			d.cParses, d.sParses, d.binds, d.logins)
	}
}

func (c *Console) showTotals(rs *resultSet) {
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
	// PgBouncer's row names and order (stats.c, admin_show_totals:
	// client_bytes is what total_received counts, server_bytes
	// total_sent), then pgferry's client logins.
	for _, kv := range []struct {
		k string
		v uint64
	}{
		{"total_server_assignment_count", t.assignments},
		{"total_xact_count", t.xacts}, {"total_query_count", t.queries},
		{"total_client_bytes", t.recv}, {"total_server_bytes", t.sent},
		{"total_xact_time", t.xactUS}, {"total_query_time", t.queryUS}, {"total_wait_time", t.waitUS},
		{"total_ps_client_parse_count", t.cParses}, {"total_ps_server_parse_count", t.sParses},
		{"total_ps_bind_count", t.binds},
		{"avg_server_assignment_count", a.assignments},
		{"avg_xact_count", a.xacts}, {"avg_query_count", a.queries},
		{"avg_client_bytes", a.recv}, {"avg_server_bytes", a.sent},
		{"avg_xact_time", a.xactUS}, {"avg_query_time", a.queryUS}, {"avg_wait_time", a.waitUS},
		{"avg_ps_client_parse_count", a.cParses}, {"avg_ps_server_parse_count", a.sParses},
		{"avg_ps_bind_count", a.binds},
		{"total_client_login_count", t.logins}, {"avg_client_login_count", a.log},
	} {
		rs.add(kv.k, kv.v)
	}
}
