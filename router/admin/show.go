// The SHOW dispatch, the column lists and the encoding of a result.

package admin

import (
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"

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
// 1.25.2's, with its names, order and types (TestColumnsArePgBouncer125s
// holds its lists, read from it by hand; router's
// TestAdminColumnsMatchPgBouncer125 compares with the binary where it is
// installed); pgferry's extra columns follow them. SHOW CLIENTS' and
// SERVERS' id is numeric where PgBouncer's is int4: pgferry's ids count
// every connection of the process and may pass 2^31.
var (
	poolsCols = cols(oidText, "database", "user").
			add(oidInt4, "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
			"sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
			"maxwait", "maxwait_us").
		add(oidText, "pool_mode", "load_balance_hosts").
		add(oidInt4, "cl_pinned", "paused")

	statsCols = cols(oidText, "database").
			add(oidNumeric, "total_server_assignment_count", "total_xact_count", "total_query_count",
			"total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
			"total_client_parse_count", "total_server_parse_count", "total_bind_count",
			"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
			"avg_xact_time", "avg_query_time", "avg_wait_time",
			"avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
			"total_client_login_count", "avg_client_login_count")

	// statsSetCols are SHOW STATS_TOTALS.
	statsSetCols = cols(oidText, "database").
			add(oidNumeric, "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
			"xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count",
			"client_login_count")

	// statsAvgCols are SHOW STATS_AVERAGES: PgBouncer 1.21+ names its
	// prepared-statement averages avg_* there, unlike the other columns
	// (stats.c, admin_show_stats_averages).
	statsAvgCols = cols(oidText, "database").
			add(oidNumeric, "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
			"xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
			"avg_client_login_count")

	// socketCols are SHOW CLIENTS and SHOW SERVERS.
	socketCols = cols(oidText, "type", "user", "database", "replication", "state", "addr").
			add(oidInt4, "port").add(oidText, "local_addr").add(oidInt4, "local_port").
			add(oidText, "connect_time", "request_time").add(oidInt4, "wait", "wait_us", "close_needed").
			add(oidText, "ptr", "link").add(oidInt4, "remote_pid").add(oidText, "tls", "application_name").
			add(oidInt4, "prepared_statements").add(oidNumeric, "id")

	databasesCols = cols(oidText, "name", "host").add(oidInt4, "port").add(oidText, "database", "force_user").
			add(oidInt4, "pool_size", "min_pool_size", "reserve_pool_size", "server_lifetime").
			add(oidText, "pool_mode", "load_balance_hosts").
			add(oidInt4, "max_connections", "current_connections", "max_client_connections", "current_client_connections",
			"paused", "disabled").
		add(oidText, "auth")

	configCols  = cols(oidText, "key", "value", "default", "changeable")
	versionCols = cols(oidText, "version")
	listsCols   = cols(oidText, "list").add(oidInt4, "items")
	usersCols   = cols(oidText, "name", "pool_size", "reserve_pool_size", "pool_mode").
			add(oidInt4, "max_user_connections", "current_connections", "max_user_client_connections", "current_client_connections")
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
func (c *Console) appendResult(rs *resultSet) {
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

// show runs SHOW what and reports whether what is known.
func (c *Console) show(what string) bool {
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
		rs.add("pgferry " + version.String())
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

const help = `
	SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|STATE|REPLICAS|PEERS
	SHOW LISTS
	SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
	RELOAD
	PAUSE [<db>]
	RESUME [<db>]
	RECONNECT [<db>]
	WAIT_CLOSE [<db>]
	KILL [<db>]
	KILL_CLIENT <ptr>
	SHUTDOWN [WAIT_FOR_SERVERS]`

func (c *Console) showHelp() {
	n := pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: "Console usage", Detail: help}
	buf, _ := n.Encode(c.wr.Buffer())
	c.wr.SetBuffer(buf)
	c.appendComplete("SHOW")
}
