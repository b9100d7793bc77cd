package router_test

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// exporterColumns are the columns prometheus-community/pgbouncer_exporter
// reads, per SHOW command (collector.go's metric maps, plus the label
// columns). pgferry must answer each command with at least these.
var exporterColumns = map[string][]string{
	"STATS": {"database", "total_query_count", "total_query_time", "total_received", "total_sent",
		"total_wait_time", "total_xact_count", "total_xact_time", "total_server_assignment_count",
		"total_client_parse_count", "total_server_parse_count", "total_bind_count"},
	"POOLS": {"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
		"sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
		"maxwait", "maxwait_us"},
	"DATABASES": {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
		"reserve_pool_size", "pool_mode", "max_connections", "current_connections", "paused", "disabled"},
	"STATS_TOTALS": {"database", "query_count", "query_time", "bytes_received", "bytes_sent", "wait_time",
		"xact_count", "xact_time", "client_parse_count", "server_parse_count", "bind_count", "server_assignment_count"},
	"LISTS":   {"list", "items"},
	"CONFIG":  {"key", "value"},
	"VERSION": {"version"},
}

func TestAdminStatsCountBytesAndQueryTimeAndAnswerTheExporter(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i := range 20 {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int from pg_sleep(0.001)", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: %d, %v", i, n, err)
		}
	}

	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	for cmd, want := range exporterColumns {
		got := mustAdmin(t, pc, "SHOW "+cmd)
		for _, c := range want {
			if !slices.Contains(got.cols, c) {
				t.Errorf("SHOW %s lacks column %q, which pgbouncer_exporter reads", cmd, c)
			}
		}
	}

	num := func(r map[string]string, col string) int64 {
		t.Helper()
		n, err := strconv.ParseInt(r[col], 10, 64)
		if err != nil {
			t.Fatalf("%s = %q: %v", col, r[col], err)
		}
		return n
	}
	stats := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if stats == nil {
		t.Fatal("SHOW STATS has no row for app")
	}
	for _, col := range []string{"total_received", "total_sent", "total_query_time", "total_xact_time",
		"total_query_count", "total_xact_count", "avg_query_time"} {
		if num(stats, col) <= 0 {
			t.Errorf("SHOW STATS %s = %s, want > 0", col, stats[col])
		}
	}
	// 20 queries slept at least 1 ms each.
	if qt := num(stats, "total_query_time"); qt < 20_000 {
		t.Errorf("total_query_time %d us, want at least 20000", qt)
	}
	if qt, xt := num(stats, "total_query_time"), num(stats, "total_xact_time"); qt > xt {
		t.Errorf("total_query_time %d > total_xact_time %d", qt, xt)
	}
	totals := mustAdmin(t, pc, "SHOW STATS_TOTALS").row("database", "app")
	if num(totals, "bytes_received") <= 0 || num(totals, "bytes_sent") <= 0 || num(totals, "query_time") <= 0 {
		t.Errorf("SHOW STATS_TOTALS %v, want bytes and query time", totals)
	}
}

func TestAdminConsoleRefusesPgBouncerCommandsItLacksWithAReason(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	tests := []struct{ sql, msg string }{
		{"SHOW MEM", "SHOW MEM is not supported by pgferry"},
		{"SHOW DNS_HOSTS", "SHOW DNS_HOSTS is not supported by pgferry"},
		{"SHOW DNS_ZONES", "SHOW DNS_ZONES is not supported by pgferry"},
		{"SHOW SOCKETS", "SHOW SOCKETS is not supported by pgferry"},
		{"SHOW ACTIVE_SOCKETS", "SHOW ACTIVE_SOCKETS is not supported by pgferry"},
		{"SHOW FDS", "SHOW FDS is not supported by pgferry"},
		{"SHOW PEER_POOLS", "SHOW PEER_POOLS is not supported by pgferry"},
		{"SUSPEND", "SUSPEND is not supported by pgferry"},
		{"DISABLE app", "DISABLE is not supported by pgferry"},
		{"ENABLE app", "ENABLE is not supported by pgferry"},
		{"SET default_pool_size = 5", "SET is not supported by pgferry"},
	}
	for _, tc := range tests {
		_, err := adminExec(pc, tc.sql)
		wantPgError(t, err, "0A000", tc.msg)
	}
	// (WAIT_CLOSE, KILL_CLIENT and SHOW PEERS work: admin_control_test.go.)
	for _, cmd := range []string{"STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "STATE", "USERS", "PEERS"} {
		mustAdmin(t, pc, "SHOW "+cmd)
	}
}
