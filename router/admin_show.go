package router

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/version"
	"github.com/pgferry/pgferry/protocol"
)

// Column type OIDs as PgBouncer's console reports them (pg_type.dat).
const (
	oidInt4    = 23
	oidText    = 25
	oidNumeric = 1700
)

// Column lists of the SHOW commands. The leading columns are PgBouncer
// 1.18's, with its names, order and types (checked against the real
// pgbouncer by TestAdminColumnsMatchPgBouncer); pgferry's extra columns
// follow them. Where PgBouncer 1.21+ inserted columns in the middle
// (total_server_assignment_count in SHOW STATS), pgferry keeps the 1.18
// order and appends them instead.
var (
	poolsCols = cols(oidText, "database", "user").
			add(oidInt4, "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
			"sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
			"maxwait", "maxwait_us").
		add(oidText, "pool_mode", "load_balance_hosts").
		add(oidInt4, "cl_pinned", "paused")

	statsCols = cols(oidText, "database").
			add(oidNumeric, "total_xact_count", "total_query_count", "total_received", "total_sent",
			"total_xact_time", "total_query_time", "total_wait_time",
			"avg_xact_count", "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
			"total_server_assignment_count", "total_client_parse_count", "total_server_parse_count",
			"total_bind_count", "total_client_login_count",
			"avg_server_assignment_count", "avg_client_parse_count", "avg_server_parse_count",
			"avg_bind_count", "avg_client_login_count")

	// statsSetCols are SHOW STATS_TOTALS and SHOW STATS_AVERAGES.
	statsSetCols = cols(oidText, "database").
			add(oidNumeric, "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
			"server_assignment_count", "client_parse_count", "server_parse_count", "bind_count", "client_login_count")

	// socketCols are SHOW CLIENTS and SHOW SERVERS.
	socketCols = cols(oidText, "type", "user", "database", "state", "addr").
			add(oidInt4, "port").add(oidText, "local_addr").add(oidInt4, "local_port").
			add(oidText, "connect_time", "request_time").add(oidInt4, "wait", "wait_us", "close_needed").
			add(oidText, "ptr", "link").add(oidInt4, "remote_pid").add(oidText, "tls", "application_name").
			add(oidNumeric, "id")

	databasesCols = cols(oidText, "name", "host").add(oidInt4, "port").add(oidText, "database", "force_user").
			add(oidInt4, "pool_size", "min_pool_size", "reserve_pool").add(oidText, "pool_mode").
			add(oidInt4, "max_connections", "current_connections", "paused", "disabled").
			add(oidText, "auth")

	configCols   = cols(oidText, "key", "value", "default", "changeable")
	versionCols  = cols(oidText, "version")
	listsCols    = cols(oidText, "list").add(oidInt4, "items")
	usersCols    = cols(oidText, "name", "pool_mode")
	keyValueCols = cols(oidText, "key", "value")
	totalsCols   = cols(oidText, "name").add(oidNumeric, "value")
	peersCols    = cols(oidInt4, "peer_id").add(oidText, "host").add(oidInt4, "port", "pool_size")

	// replicasCols are pgferry's own SHOW REPLICAS (PgBouncer has none).
	replicasCols = cols(oidText, "database", "user", "replica", "state").
			add(oidNumeric, "lag_bytes", "lag_seconds").
			add(oidInt4, "sv_active", "sv_idle", "sv_login", "cl_waiting").
			add(oidText, "last_probe", "error")
)

type column struct {
	name string
	oid  uint32
}

type columns []column

func cols(oid uint32, names ...string) columns { return columns(nil).add(oid, names...) }

func (cs columns) add(oid uint32, names ...string) columns {
	for _, n := range names {
		cs = append(cs, column{n, oid})
	}
	return cs
}

// resultSet accumulates one SHOW result. Values are sent in text format;
// a nil value is NULL.
type resultSet struct {
	cols columns
	rows [][]any
}

func (rs *resultSet) add(vals ...any) {
	if len(vals) != len(rs.cols) {
		panic(fmt.Sprintf("admin console: %d values for %d columns", len(vals), len(rs.cols)))
	}
	rs.rows = append(rs.rows, vals)
}

func formatValue(v any) []byte {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(v)
	case int:
		return strconv.AppendInt(nil, int64(v), 10)
	case int64:
		return strconv.AppendInt(nil, v, 10)
	case uint64:
		return strconv.AppendUint(nil, v, 10)
	case uint32:
		return strconv.AppendUint(nil, uint64(v), 10)
	case bool:
		if v {
			return []byte("1")
		}
		return []byte("0")
	default:
		return []byte(fmt.Sprint(v))
	}
}

// appendResult appends RowDescription, the DataRows and CommandComplete
// "SHOW".
func (c *adminConsole) appendResult(rs *resultSet) {
	rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(rs.cols))}
	for i, col := range rs.cols {
		size := int16(-1)
		if col.oid == oidInt4 {
			size = 4
		}
		rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(col.name), DataTypeOID: col.oid, DataTypeSize: size, TypeModifier: -1}
	}
	buf, _ := rd.Encode(c.wr.Buffer())
	values := make([][]byte, len(rs.cols))
	for _, row := range rs.rows {
		for i, v := range row {
			values[i] = formatValue(v)
		}
		buf, _ = (&pgproto3.DataRow{Values: values}).Encode(buf)
	}
	c.wr.SetBuffer(buf)
	c.appendComplete("SHOW")
}

// showPeers lists the [peers] entries (PgBouncer's SHOW PEERS); peers found
// through peers_dns are not listed, having no ids.
func (c *adminConsole) showPeers(rs *resultSet) {
	rs.cols = peersCols
	cfg := c.srv.cfg.Load()
	for _, name := range slices.Sorted(maps.Keys(cfg.Peers)) {
		p := cfg.Peers[name]
		id, _ := strconv.Atoi(name)
		port := p.Port
		if port == 0 {
			port = 6432
		}
		rs.add(id, p.Host, port, 0)
	}
}

// show runs SHOW what and reports whether what is known.
func (c *adminConsole) show(what string) bool {
	rs := &resultSet{}
	switch what {
	case "HELP":
		c.showHelp()
		return true
	case "POOLS":
		c.showPools(rs)
	case "STATS":
		c.showStats(rs)
	case "STATS_TOTALS":
		c.showStatsSet(rs, false)
	case "STATS_AVERAGES":
		c.showStatsSet(rs, true)
	case "TOTALS":
		c.showTotals(rs)
	case "CLIENTS":
		c.showClients(rs)
	case "SERVERS":
		c.showServers(rs)
	case "DATABASES":
		c.showDatabases(rs)
	case "CONFIG":
		c.showConfig(rs)
	case "VERSION":
		rs.cols = versionCols
		rs.add("pgferry " + Version())
	case "LISTS":
		c.showLists(rs)
	case "USERS":
		c.showUsers(rs)
	case "STATE":
		c.showState(rs)
	case "REPLICAS":
		c.showReplicas(rs)
	case "PEERS":
		c.showPeers(rs)
	case "FDS", "SOCKETS", "ACTIVE_SOCKETS", "MEM", "DNS_HOSTS", "DNS_ZONES", "PEER_POOLS", "PREPARED_STATEMENTS":
		// PgBouncer's, about its own internals (file descriptors for
		// online restart, its memory caches, its DNS cache): pgferry has no
		// equivalent to report.
		c.appendError(protocol.NewError(protocol.SQLStateFeatureNotSupported, "SHOW "+what+" is not supported by pgferry"))
		return true
	default:
		return false
	}
	c.appendResult(rs)
	return true
}

const adminHelp = `
	SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|STATE|REPLICAS|PEERS
	SHOW LISTS
	SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
	RELOAD
	PAUSE [<db>]
	RESUME [<db>]
	RECONNECT [<db>]
	WAIT_CLOSE [<db>]
	KILL <db>
	KILL_CLIENT <ptr>
	SHUTDOWN`

func (c *adminConsole) showHelp() {
	n := pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: "Console usage", Detail: adminHelp}
	buf, _ := n.Encode(c.wr.Buffer())
	c.wr.SetBuffer(buf)
	c.appendComplete("SHOW")
}

// Version returns pgferry's version (see internal/version).
func Version() string { return version.String() }

func (c *adminConsole) dbStats() []dbStats {
	snap := c.srv.Snapshot()
	var out []dbStats
	for _, p := range snap.Pools { // sorted by database
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

func (c *adminConsole) averages(d dbStats) averages {
	secs := uint64(time.Since(c.srv.started) / time.Second)
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

func (c *adminConsole) showDatabases(rs *resultSet) {
	rs.cols = databasesCols
	cfg := c.srv.cfg.Load()
	entries, _ := c.srv.lists()
	type agg struct {
		conns  int
		paused bool
	}
	byDB := make(map[string]*agg)
	for _, e := range entries {
		a := byDB[e.dbName]
		if a == nil {
			a = &agg{}
			byDB[e.dbName] = a
		}
		st := e.pool.Stat()
		a.conns += st.Total
		a.paused = a.paused || st.Paused
	}
	names := make([]string, 0, len(cfg.Databases)+len(byDB))
	for n := range cfg.Databases {
		names = append(names, n)
	}
	for n := range byDB {
		if _, ok := cfg.Databases[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		db, _, ok := cfg.LookupDatabase(n)
		if !ok {
			continue // pool of a database removed by a reload
		}
		dbname := db.DBName
		if dbname == "" && n != "*" {
			dbname = n
		}
		size := db.PoolSize
		if size == 0 {
			size = cfg.DefaultPoolSize
		}
		a := byDB[n]
		if a == nil {
			a = &agg{}
		}
		auth := db.Auth
		if auth == "" {
			auth = "password"
		}
		rs.add(n, db.Host, db.Port, dbname, db.User, size, db.MinPoolSize, db.ReservePool, db.PoolMode,
			db.MaxDBConnections, a.conns, a.paused, false, auth)
	}
}

func (c *adminConsole) showConfig(rs *resultSet) {
	rs.cols = configCols
	cur := reflect.ValueOf(c.srv.cfg.Load()).Elem()
	def := reflect.ValueOf(configs.Default()).Elem()
	fixed := restartOnlyKeys()
	var keys []string
	idx := map[string]int{}
	t := cur.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" || f.Type.Kind() == reflect.Map {
			continue
		}
		keys = append(keys, key)
		idx[key] = i
	}
	slices.Sort(keys)
	for _, k := range keys {
		i := idx[k]
		changeable := "yes"
		if fixed[k] {
			changeable = "no"
		}
		rs.add(k, configValue(cur.Field(i)), configValue(def.Field(i)), changeable)
	}
}

// configValue formats a setting as in pgferry's TOML (durations as "30s",
// lists comma-separated). Stringers (Duration, Secret) print themselves,
// so secrets print redacted.
func configValue(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range v.Len() {
			parts[i] = configValue(v.Index(i))
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}

// restartOnlyKeys asks configs which top-level settings a reload cannot
// change, by changing each one in turn.
var restartOnlyKeys = sync.OnceValue(func() map[string]bool {
	out := make(map[string]bool)
	base := configs.Default()
	t := reflect.TypeOf(*base)
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" {
			continue
		}
		changed := *base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Slice:
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
		default:
			continue
		}
		if len(configs.RestartOnlyChanges(base, &changed)) > 0 {
			out[key] = true
		}
	}
	return out
})

func (c *adminConsole) showLists(rs *resultSet) {
	rs.cols = listsCols
	cfg := c.srv.cfg.Load()
	snap := c.srv.Snapshot()
	logged, servers := snap.AdminClients, 0
	for _, p := range snap.Pools {
		logged += p.ClientsActive + p.ClientsIdle + p.ClientsWaiting
		servers += p.Stat.Total
	}
	for _, kv := range []struct {
		k string
		v int
	}{
		{"databases", len(cfg.Databases)}, {"users", len(cfg.Users)}, {"pools", len(snap.Pools)},
		{"free_clients", 0}, {"used_clients", int(snap.Clients)}, {"login_clients", max(0, int(snap.Clients)-logged)},
		{"free_servers", 0}, {"used_servers", servers},
		{"dns_names", 0}, {"dns_zones", 0}, {"dns_queries", 0}, {"dns_pending", 0},
	} {
		rs.add(kv.k, kv.v)
	}
}

func (c *adminConsole) showUsers(rs *resultSet) {
	rs.cols = usersCols
	cfg := c.srv.cfg.Load()
	names := make([]string, 0, len(cfg.Users))
	for n := range cfg.Users {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		rs.add(n, cfg.Users[n].PoolMode)
	}
}

// showState answers SHOW STATE as PgBouncer 1.19+ does: whether the
// pooler is active, paused (every pool) or suspended (never, in pgferry).
func (c *adminConsole) showState(rs *resultSet) {
	rs.cols = keyValueCols
	entries, _ := c.srv.lists()
	paused := len(entries) > 0 && allPaused(entries)
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	rs.add("active", yes(!paused && !c.srv.isDraining()))
	rs.add("paused", yes(paused))
	rs.add("suspended", "no")
}

// showReplicas lists each read replica with the lag monitor's view:
// state is "in rotation", "lagging" (up, over a bound) or "down".
func (c *adminConsole) showReplicas(rs *resultSet) {
	rs.cols = replicasCols
	for _, p := range c.srv.Snapshot().Pools {
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
