package router_test

// Tests of the admin console (database pgbouncer): every SHOW command,
// who may use the console and what it refuses, SHOW STATS counts. This
// file also holds the console helpers other tests use. The commands that
// act (PAUSE, RECONNECT, KILL, RELOAD, SHUTDOWN, WAIT_CLOSE, KILL_CLIENT)
// are in admin_control_test.go, the comparison with a real PgBouncer in
// admin_pgbouncer_test.go.

import (
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// adminShowCommands are the SHOW commands both pgferry and PgBouncer (1.18
// and 1.25.2) answer.
var adminShowCommands = []string{
	"POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "CLIENTS", "SERVERS",
	"DATABASES", "CONFIG", "VERSION", "LISTS", "USERS",
}

func adminDSN(f *ferrytest.Ferry) string { return f.DSN("pgbouncer", "admin", "admin-secret") }

func statsDSN(f *ferrytest.Ferry) string { return f.DSN("pgbouncer", "stats", "stats-secret") }

// adminResult is one console answer: column names, text rows, the error.
type adminResult struct {
	cols []string
	oids []uint32
	rows [][]string
	tag  string
}

// adminExec runs sql with the simple query protocol.
func adminExec(pc *pgconn.PgConn, sql string) (adminResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results, err := pc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return adminResult{}, err
	}
	if len(results) != 1 {
		return adminResult{}, fmt.Errorf("%d results", len(results))
	}
	r := results[0]
	if r.Err != nil {
		return adminResult{}, r.Err
	}
	var out adminResult
	for _, fd := range r.FieldDescriptions {
		out.cols = append(out.cols, fd.Name)
		out.oids = append(out.oids, fd.DataTypeOID)
	}
	for _, row := range r.Rows {
		var vs []string
		for _, v := range row {
			vs = append(vs, string(v))
		}
		out.rows = append(out.rows, vs)
	}
	out.tag = r.CommandTag.String()
	return out, nil
}

func mustAdmin(t *testing.T, pc *pgconn.PgConn, sql string) adminResult {
	t.Helper()
	r, err := adminExec(pc, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r
}

// row returns the first row whose column col equals val, as a map.
func (r adminResult) row(col, val string) map[string]string {
	i := slices.Index(r.cols, col)
	for _, row := range r.rows {
		if i >= 0 && row[i] == val {
			m := make(map[string]string, len(r.cols))
			for j, c := range r.cols {
				m[c] = row[j]
			}
			return m
		}
	}
	return nil
}

// wantPgError asserts that err is a PostgreSQL error with SQLSTATE code and
// message msg.
func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	if pe := expectPgError(t, err, code); pe.Message != msg {
		t.Fatalf("got %s %q, want %s %q", pe.Code, pe.Message, code, msg)
	}
}

// TestShowClientsStatesAreThoseOfPgBouncer125 checks SHOW CLIENTS' state
// against PgBouncer 1.21+'s (admin.c socket_row: a logged-in client with no
// server is "idle", one holding a server "active", one queued "waiting"),
// which pgbouncer_exporter's pgbouncer_client_connections{state} counts.
func TestShowClientsStatesAreThoseOfPgBouncer125(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	connect := func(name string) *pgx.Conn {
		c := ferrytest.Connect(t, ctx, f.AppDSN()+" application_name="+name)
		if _, err := c.Exec(context.Background(), "select 1"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	connect("idler")
	inTx := connect("in_tx")
	if _, err := inTx.Exec(context.Background(), "begin; select 1"); err != nil {
		t.Fatal(err)
	}
	queued := connect("queued")
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	state := func(app string) string { return mustAdmin(t, pc, "SHOW CLIENTS").row("application_name", app)["state"] }
	// Its server goes back to the pool as its ReadyForQuery goes out,
	// which may be just after the client read it.
	ferrytest.Eventually(t, 10*time.Second, "a client idle between transactions to show idle", func() (bool, error) {
		return state("idler") == "idle", nil
	})
	if c := mustAdmin(t, pc, "SHOW CLIENTS").row("application_name", "in_tx"); c["state"] != "active" || c["link"] == "" {
		t.Errorf("a client in a transaction: %v, want state active with a link", c)
	}
	if c := mustAdmin(t, pc, "SHOW CLIENTS").row("database", "pgbouncer"); c["state"] != "idle" {
		t.Errorf("the console's own client: state %q, want idle", c["state"])
	}
	if _, err := inTx.Exec(context.Background(), "commit"); err != nil {
		t.Fatal(err)
	}
	mustAdmin(t, pc, "PAUSE app")
	done := make(chan error, 1)
	go func() {
		_, err := queued.Exec(context.Background(), "select 2")
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the queued client waiting", func() (bool, error) {
		return state("queued") == "waiting", nil
	})
	mustAdmin(t, pc, "RESUME app")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAdminConsoleAnswersEveryShowCommandThroughPsql(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	psql, err := osexec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql is required: %v", err)
	}
	for _, cmd := range append(slices.Clone(adminShowCommands), "STATE", "HELP") {
		t.Run(cmd, func(t *testing.T) {
			out, err := osexec.Command(psql, "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
				"-c", "show "+strings.ToLower(cmd)+";", adminDSN(f)).CombinedOutput()
			if err != nil {
				t.Fatalf("psql SHOW %s: %v\n%s", cmd, err, out)
			}
			if cmd == "HELP" {
				if !strings.Contains(string(out), "SHOW HELP|CONFIG") {
					t.Fatalf("SHOW HELP printed:\n%s", out)
				}
				return
			}
			if !strings.Contains(string(out), "row") {
				t.Fatalf("SHOW %s printed no result:\n%s", cmd, out)
			}
		})
	}

	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if got := pc.ParameterStatus("server_version"); got != "15.0 (pgferry)" {
		t.Errorf("server_version = %q", got)
	}
	pools := mustAdmin(t, pc, "SHOW POOLS")
	p := pools.row("database", "app")
	if p == nil || p["user"] != "app" || p["cl_active"] != "1" || p["pool_mode"] != "transaction" || p["sv_idle"] == "0" {
		t.Errorf("SHOW POOLS app row = %v", p)
	}
	stats := mustAdmin(t, pc, "show stats;")
	if s := stats.row("database", "app"); s == nil || s["total_xact_count"] == "0" || s["total_client_login_count"] != "1" {
		t.Errorf("SHOW STATS app row = %v", s)
	}
	clients := mustAdmin(t, pc, "SHOW CLIENTS")
	if c := clients.row("user", "app"); c == nil || c["database"] != "app" || c["state"] != "idle" || c["addr"] != "127.0.0.1" {
		t.Errorf("SHOW CLIENTS app row = %v", c)
	}
	if c := clients.row("user", "admin"); c == nil || c["database"] != "pgbouncer" {
		t.Errorf("SHOW CLIENTS admin row = %v", c)
	}
	servers := mustAdmin(t, pc, "SHOW SERVERS")
	if s := servers.row("database", "app"); s == nil || s["state"] != "idle" || s["remote_pid"] == "0" {
		t.Errorf("SHOW SERVERS app row = %v", s)
	}
	dbs := mustAdmin(t, pc, "SHOW DATABASES")
	if d := dbs.row("name", "app"); d == nil || d["port"] != strconv.Itoa(cluster.Port) || d["pool_size"] != "5" {
		t.Errorf("SHOW DATABASES app row = %v", d)
	}
	cfg := mustAdmin(t, pc, "SHOW CONFIG")
	if c := cfg.row("key", "default_pool_size"); c == nil || c["value"] != "5" || c["default"] != "20" || c["changeable"] != "yes" {
		t.Errorf("SHOW CONFIG default_pool_size = %v", c)
	}
	if c := cfg.row("key", "listen_port"); c == nil || c["changeable"] != "no" {
		t.Errorf("SHOW CONFIG listen_port = %v", c)
	}
	if v := mustAdmin(t, pc, "SHOW VERSION"); len(v.rows) != 1 || !strings.HasPrefix(v.rows[0][0], "pgferry ") {
		t.Errorf("SHOW VERSION = %v", v.rows)
	}
	if u := mustAdmin(t, pc, "SHOW USERS"); u.row("name", "admin") == nil {
		t.Errorf("SHOW USERS = %v", u.rows)
	}
	if s := mustAdmin(t, pc, "SHOW STATE"); s.row("key", "active")["value"] != "yes" {
		t.Errorf("SHOW STATE = %v", s.rows)
	}
}

func TestAdminConsoleRefusesUsersOutsideAdminAndStatsUsers(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	_, err := pgconn.Connect(context.Background(), f.DSN("pgbouncer", ferrytest.User, ferrytest.Password))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "08P01" || pe.Message != "not allowed" {
		t.Fatalf("got %v, want FATAL 08P01 not allowed", err)
	}
	_, err = pgconn.Connect(context.Background(), f.DSN("pgbouncer", "admin", "wrong"))
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("wrong admin password: got %v", err)
	}
}

func TestAdminConsoleStatsUserMayOnlyShow(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, statsDSN(f))
	mustAdmin(t, pc, "SHOW POOLS")
	mustAdmin(t, pc, "SHOW CONFIG")
	for _, cmd := range []string{"PAUSE", "RESUME app", "RECONNECT", "KILL app", "RELOAD", "SHUTDOWN", "SUSPEND"} {
		_, err := adminExec(pc, cmd)
		wantPgError(t, err, "08P01", "admin access needed")
	}
	// The session lives on after the refusals.
	mustAdmin(t, pc, "SHOW VERSION")
}

func TestAdminConsoleRejectsInvalidCommandsAndTheExtendedProtocol(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	for _, sql := range []string{"SELECT 1", "show foo", ";"} {
		_, err := adminExec(pc, sql)
		wantPgError(t, err, "08P01", "invalid command '"+sql+"', use SHOW HELP;")
	}
	_, err := adminExec(pc, "SUSPEND")
	wantPgError(t, err, "0A000", "SUSPEND is not supported by pgferry")

	conn, err := pgx.Connect(context.Background(), adminDSN(f))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ignored string
	err = conn.QueryRow(context.Background(), "SHOW VERSION").Scan(&ignored) // Parse, Describe, Sync
	wantPgError(t, err, "08P01", "the admin console supports only simple queries")
	rows, err := conn.Query(context.Background(), "SHOW VERSION", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var v string
	for rows.Next() {
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil || !strings.HasPrefix(v, "pgferry") {
		t.Fatalf("SHOW VERSION after an extended-protocol error: %q, %v", v, err)
	}
}

func TestShowStatsCountsClientBytesAndQueryTime(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 5; i++ {
		if _, err := app.Exec(ctx, "select pg_sleep(0.02), repeat('x', 1000)"); err != nil {
			t.Fatal(err)
		}
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	num := func(row map[string]string, col string) int64 {
		n, err := strconv.ParseInt(row[col], 10, 64)
		if err != nil {
			t.Fatalf("%s = %q: %v", col, row[col], err)
		}
		return n
	}
	s := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if s == nil {
		t.Fatal("no SHOW STATS row for app")
	}
	// Five answers of over 1,000 bytes each went to the client; five
	// queries of 20 ms ran.
	if got := num(s, "total_sent"); got < 5000 {
		t.Errorf("total_sent = %d, want at least 5000", got)
	}
	if got := num(s, "total_received"); got < int64(5*len("select pg_sleep(0.02), repeat('x', 1000)")) {
		t.Errorf("total_received = %d", got)
	}
	if got := num(s, "total_query_time"); got < 5*20000 || got > num(s, "total_xact_time") {
		t.Errorf("total_query_time = %d us, want at least 100000 and at most total_xact_time (%s)", got, s["total_xact_time"])
	}
	if num(s, "avg_query_time") < 20000 {
		t.Errorf("avg_query_time = %s us, want at least 20000", s["avg_query_time"])
	}
	totals := mustAdmin(t, pc, "SHOW TOTALS")
	if r := totals.row("name", "total_server_bytes"); r == nil || r["value"] == "0" {
		t.Errorf("SHOW TOTALS total_server_bytes = %v", r)
	}
}

// TestAStatementRefusedInsideATransactionCountsNoQueryTimeItDidNotTake
// checks SHOW STATS after pgferry refused a pinning statement inside a
// transaction (pin_on_session_state = false): the server raises the error,
// and the time of that round trip, not the time since pgferry started, is
// what total_query_time gains.
func TestAStatementRefusedInsideATransactionCountsNoQueryTimeItDidNotTake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PinOnSessionState = false
	f := ferrytest.Start(t, cfg)
	time.Sleep(time.Second) // pgferry's age, which a wrong start would count
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "create temp table refused_tmp (x int)"); err == nil {
		t.Fatal("a temporary table was created with pin_on_session_state = false")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	s := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if s == nil {
		t.Fatal("no SHOW STATS row for app")
	}
	query, err1 := strconv.ParseInt(s["total_query_time"], 10, 64)
	xact, err2 := strconv.ParseInt(s["total_xact_time"], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("total_query_time %q, total_xact_time %q", s["total_query_time"], s["total_xact_time"])
	}
	if query > xact {
		t.Errorf("total_query_time = %d us, more than total_xact_time = %d us: the refused statement counted time it did not take", query, xact)
	}
}
