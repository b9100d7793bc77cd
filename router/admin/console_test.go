package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// fakeBackend is a Backend of canned data that records the control
// actions asked of it.
type fakeBackend struct {
	cfg       *configs.Config
	draining  bool
	snap      Snapshot
	clients   []ClientInfo
	servers   []ServerInfo
	pools     *fakePools
	calls     []string
	pause     PauseState
	authUsers []string
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{cfg: configs.Default(), pools: &fakePools{n: 1}}
}

func (b *fakeBackend) Config() *configs.Config { return b.cfg }
func (b *fakeBackend) Started() time.Time      { return time.Now().Add(-time.Hour) }
func (b *fakeBackend) Draining() bool          { return b.draining }
func (b *fakeBackend) PauseState() *PauseState { return &b.pause }
func (b *fakeBackend) Snapshot() Snapshot      { return b.snap }
func (b *fakeBackend) Clients() []ClientInfo   { return b.clients }
func (b *fakeBackend) AuthUsers() []string     { return b.authUsers }
func (b *fakeBackend) Servers() []ServerInfo   { return b.servers }

func (b *fakeBackend) Pools(db string) PoolSet {
	b.calls = append(b.calls, "Pools "+db)
	return b.pools
}

func (b *fakeBackend) KillClients(db string) int {
	b.calls = append(b.calls, "KillClients "+db)
	return 0
}

func (b *fakeBackend) KillClient(id uint64) bool {
	b.calls = append(b.calls, fmt.Sprintf("KillClient %d", id))
	return false
}

func (b *fakeBackend) Reload() error   { b.calls = append(b.calls, "Reload"); return ErrNoAction }
func (b *fakeBackend) Shutdown() error { b.calls = append(b.calls, "Shutdown"); return ErrNoAction }

// fakePools is a PoolSet of n pools that never drain: Pause waits for its
// context. After three Pauses it kills the console's session, so that a
// console that should not have paused at all does not wait forever.
type fakePools struct {
	n, paused int
	pauses    int
	session   *fakeSession
}

func (p *fakePools) Len() int    { return p.n }
func (p *fakePools) Paused() int { return p.paused }
func (p *fakePools) Pause(ctx context.Context) error {
	p.pauses++
	p.paused = p.n
	if p.pauses >= 3 && p.session != nil {
		p.session.killed = true
	}
	<-ctx.Done()
	return ctx.Err()
}
func (p *fakePools) Resume()          { p.paused = 0 }
func (p *fakePools) Reconnect()       {}
func (p *fakePools) CloseNeeded() int { return 0 }

type fakeSession struct {
	killed bool
	wakes  int
}

func (s *fakeSession) Killed() bool { return s.killed }
func (s *fakeSession) ClearWake()   { s.wakes++ }

// timeoutError is what a read interrupted by a past deadline returns.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

// script is a client: each Read returns the next chunk of bytes, or fails
// with the next error; then io.EOF.
type script struct{ steps []any }

func (s *script) Read(p []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	switch st := s.steps[0].(type) {
	case error:
		s.steps = s.steps[1:]
		return 0, st
	case []byte:
		n := copy(p, st)
		if n == len(st) {
			s.steps = s.steps[1:]
		} else {
			s.steps[0] = st[n:]
		}
		return n, nil
	}
	panic("bad script step")
}

// frames encodes client messages as one chunk.
func frames(t *testing.T, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// run serves a console over the scripted client and returns what it
// answered after its greeting, one line per message, and Serve's error.
func run(t *testing.T, b *fakeBackend, s *fakeSession, full bool, steps ...any) ([]string, error) {
	t.Helper()
	b.pools.session = s
	var out bytes.Buffer
	rd, wr := protocol.NewReader(&script{steps: steps}), protocol.NewWriter(&out)
	defer rd.Release()
	defer wr.Release()
	err := New(Config{Backend: b, Session: s, Full: full, Reader: rd, Writer: wr, PID: 7, Key: 9}).Serve(nil)
	got := describe(t, out.Bytes())
	i := slices.Index(got, "Z I") // the greeting ends with the first ReadyForQuery
	if i < 0 || !slices.Contains(got[:i], "K 7 00000009") {
		t.Fatalf("no greeting with the cancel key: %q", got)
	}
	return got[i+1:], err
}

// describe decodes server messages into one line each.
func describe(t *testing.T, b []byte) []string {
	t.Helper()
	fe := pgproto3.NewFrontend(bytes.NewReader(b), io.Discard)
	var out []string
	for {
		m, err := fe.Receive()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode console output: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.ParameterStatus:
			out = append(out, "S "+m.Name+"="+m.Value)
		case *pgproto3.BackendKeyData:
			out = append(out, fmt.Sprintf("K %d %x", m.ProcessID, m.SecretKey))
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z "+string(m.TxStatus))
		case *pgproto3.ErrorResponse:
			out = append(out, "E "+m.Severity+" "+m.Code+" "+m.Message)
		case *pgproto3.NoticeResponse:
			out = append(out, "N "+m.Message)
		case *pgproto3.RowDescription:
			var names []string
			for _, f := range m.Fields {
				names = append(names, string(f.Name))
			}
			out = append(out, "T "+strings.Join(names, ","))
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				vals = append(vals, string(v))
			}
			out = append(out, "D "+strings.Join(vals, "|"))
		case *pgproto3.CommandComplete:
			out = append(out, "C "+string(m.CommandTag))
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
}

func TestConsoleAnswersCommandsAsPgBouncerDoes(t *testing.T) {
	tests := []struct {
		name  string
		full  bool
		sql   string
		want  []string
		calls []string
	}{
		{
			name: "unknown command",
			full: true,
			sql:  "FROB now;",
			want: []string{"E ERROR 08P01 invalid command 'FROB now;', use SHOW HELP;", "Z I"},
		},
		{
			name: "empty query",
			full: true,
			sql:  " ; ",
			want: []string{"E ERROR 08P01 invalid command ' ; ', use SHOW HELP;", "Z I"},
		},
		{
			name: "unknown SHOW",
			full: false,
			sql:  "show frobs",
			want: []string{"E ERROR 08P01 invalid command 'show frobs', use SHOW HELP;", "Z I"},
		},
		{
			name: "stats user PAUSE",
			full: false,
			sql:  "PAUSE app",
			want: []string{"E ERROR 08P01 admin access needed", "Z I"},
		},
		{
			name: "stats user SUSPEND",
			full: false,
			sql:  "SUSPEND",
			want: []string{"E ERROR 08P01 admin access needed", "Z I"},
		},
		{
			name: "stats user may SHOW",
			full: false,
			sql:  "SHOW USERS",
			want: []string{"T name,pool_size,reserve_pool_size,pool_mode,max_user_connections,current_connections,max_user_client_connections,current_client_connections", "C SHOW", "Z I"},
		},
		{
			name: "RELOAD takes no database",
			full: true,
			sql:  "RELOAD app",
			want: []string{"E ERROR 08P01 invalid command 'RELOAD app', use SHOW HELP;", "Z I"},
		},
		{
			name:  "RELOAD without a reload action",
			full:  true,
			sql:   "RELOAD",
			want:  []string{"E ERROR F0000 RELOAD failed, see logs for additional details", "Z I"},
			calls: []string{"Reload"},
		},
		{
			name:  "RESUME of a running pooler",
			full:  true,
			sql:   "resume",
			want:  []string{"E ERROR 08P01 pooler is not paused/suspended", "Z I"},
			calls: []string{"Pools "},
		},
		{
			name:  "KILL_CLIENT of an unknown client",
			full:  true,
			sql:   "KILL_CLIENT 0x1f",
			want:  []string{"E ERROR 08P01 client 0x1f not found", "Z I"},
			calls: []string{"KillClient 31"},
		},
		{
			name: "SET is not supported",
			full: true,
			sql:  "SET default_pool_size = 3",
			want: []string{"E ERROR 0A000 SET is not supported by pgferry", "Z I"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBackend()
			got, err := run(t, b, &fakeSession{}, tc.full, frames(t, &pgproto3.Query{String: tc.sql}, &pgproto3.Terminate{}))
			if !errors.Is(err, ErrDone) {
				t.Fatalf("Serve = %v, want ErrDone", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("answer\n got %q\nwant %q", got, tc.want)
			}
			if !slices.Equal(b.calls, tc.calls) {
				t.Errorf("backend calls %q, want %q", b.calls, tc.calls)
			}
		})
	}
}

func TestConsoleRefusesAnExtendedProtocolBatchOnceAndSkipsItToSync(t *testing.T) {
	b := newFakeBackend()
	in := frames(t,
		&pgproto3.Parse{Query: "SHOW POOLS"},
		&pgproto3.Bind{},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "SHOW USERS"},
		&pgproto3.Parse{Query: "SHOW POOLS"},
		&pgproto3.Sync{},
	)
	got, err := run(t, b, &fakeSession{}, true, in)
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v, want ErrDone at EOF", err)
	}
	refused := "E ERROR 08P01 the admin console supports only simple queries"
	want := []string{refused, "Z I", "T name,pool_size,reserve_pool_size,pool_mode,max_user_connections,current_connections,max_user_client_connections,current_client_connections", "C SHOW", "Z I", refused, "Z I"}
	if !slices.Equal(got, want) {
		t.Errorf("answer\n got %q\nwant %q", got, want)
	}
}

func TestConsolePauseEndsWhenItsSessionIsKilled(t *testing.T) {
	b := newFakeBackend()
	s := &fakeSession{killed: true}
	got, err := run(t, b, s, true, frames(t, &pgproto3.Query{String: "PAUSE"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v, want ErrDone", err)
	}
	if len(got) != 0 {
		t.Errorf("a killed PAUSE answered %q", got)
	}
	if b.pools.pauses != 1 {
		t.Errorf("Pause called %d times, want 1", b.pools.pauses)
	}
}

func TestConsolePauseEndsWhenPgferryDrains(t *testing.T) {
	b := newFakeBackend()
	b.draining = true
	_, err := run(t, b, &fakeSession{}, true, frames(t, &pgproto3.Query{String: "PAUSE app"}))
	var pe *protocol.Error
	if !errors.As(err, &pe) || !pe.IsFatal() || pe.Code != protocol.SQLStateAdminShutdown {
		t.Fatalf("Serve = %v, want FATAL 57P01", err)
	}
}

func TestConsoleWokenWhileDrainingEndsWithAdminShutdown(t *testing.T) {
	tests := []struct {
		name      string
		killed    bool
		draining  bool
		wantWakes int
		wantCode  string // "" : ErrDone
	}{
		{name: "stale wake", wantWakes: 1},
		{name: "draining", draining: true, wantWakes: 1, wantCode: protocol.SQLStateAdminShutdown},
		{name: "killed", killed: true, draining: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBackend()
			b.draining = tc.draining
			s := &fakeSession{killed: tc.killed}
			_, err := run(t, b, s, true, timeoutError{}, frames(t, &pgproto3.Terminate{}))
			if s.wakes != tc.wantWakes {
				t.Errorf("ClearWake called %d times, want %d", s.wakes, tc.wantWakes)
			}
			if tc.wantCode == "" {
				if !errors.Is(err, ErrDone) {
					t.Fatalf("Serve = %v, want ErrDone", err)
				}
				return
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != tc.wantCode {
				t.Fatalf("Serve = %v, want %s", err, tc.wantCode)
			}
		})
	}
}

type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

func TestShowClientsAndServersJoinClientsToTheirServers(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	b := newFakeBackend()
	b.clients = []ClientInfo{
		{ID: 3, User: "app", Database: "app", Linked: true, Server: 5, Addr: "10.0.0.2:5500",
			LocalAddr: addr("10.0.0.1:6432"), TLS: "TLSv1.3/TLS_AES_128_GCM_SHA256", ConnectedAt: at, AppName: "psql", PreparedStatements: 2},
		{ID: 4, User: "app", Database: "app", Waiting: true, ConnectedAt: at},
	}
	b.servers = []ServerInfo{
		{Database: "app", User: "app", Conn: pool.ConnInfo{ID: 6, Addr: "db:5432", PID: 101, Created: at, LastUsed: at.Add(time.Second), CloseNeeded: true, PreparedStatements: 4}},
		{Database: "app", User: "app", Lent: true, Client: 3, Conn: pool.ConnInfo{ID: 5, Addr: "db:5432", PID: 100, TLS: true, Created: at}},
	}
	got, err := run(t, b, &fakeSession{}, false, frames(t, &pgproto3.Query{String: "SHOW CLIENTS"}, &pgproto3.Query{String: "SHOW SERVERS"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	// replication is "none" (pgferry has no replication connections).
	head := "T type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id"
	want := []string{
		head,
		"D C|app|app|none|active|10.0.0.2|5500|10.0.0.1|6432|2024-05-06 07:08:09 UTC|2024-05-06 07:08:09 UTC|0|0|0|0x3|0x10000000005|0|TLSv1.3/TLS_AES_128_GCM_SHA256|psql|2|3",
		"D C|app|app|none|waiting|unix|0||0|2024-05-06 07:08:09 UTC|2024-05-06 07:08:09 UTC|0|0|0|0x4||0|||0|4",
		"C SHOW", "Z I",
		head,
		"D S|app|app|none|active|db|5432||0|2024-05-06 07:08:09 UTC|2024-05-06 07:08:09 UTC|0|0|0|0x10000000005|0x3|100|TLS||0|5",
		"D S|app|app|none|idle|db|5432||0|2024-05-06 07:08:09 UTC|2024-05-06 07:08:10 UTC|0|0|1|0x10000000006||101|||4|6",
		"C SHOW", "Z I",
	}
	if !slices.Equal(got, want) {
		t.Errorf("answer\n got %q\nwant %q", got, want)
	}
}

// TestStatsNamesAreThoseOfPgBouncer125 pins the names PgBouncer 1.25.2
// gives what pgferry counts (read from it by hand; router's
// TestAdminColumnsMatchPgBouncer compares with Debian's 1.18, which lacks
// the prepared-statement ones): SHOW TOTALS' rows, in its order, and SHOW
// STATS_AVERAGES' avg_* columns for prepared statements.
func TestStatsNamesAreThoseOfPgBouncer125(t *testing.T) {
	b := newFakeBackend()
	b.snap.Pools = []PoolInfo{{Database: "app", User: "app", Counters: Counters{Binds: 7}}}
	got, err := run(t, b, &fakeSession{}, false, frames(t, &pgproto3.Query{String: "SHOW TOTALS"}, &pgproto3.Query{String: "SHOW STATS_AVERAGES"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	var rows []string
	for _, line := range got {
		if name, ok := strings.CutPrefix(line, "D "); ok {
			rows = append(rows, strings.Split(name, "|")[0])
		}
	}
	pgbouncer := []string{
		"total_server_assignment_count", "total_xact_count", "total_query_count", "total_client_bytes",
		"total_server_bytes", "total_xact_time", "total_query_time", "total_wait_time",
		"total_ps_client_parse_count", "total_ps_server_parse_count", "total_ps_bind_count",
		"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_client_bytes",
		"avg_server_bytes", "avg_xact_time", "avg_query_time", "avg_wait_time",
		"avg_ps_client_parse_count", "avg_ps_server_parse_count", "avg_ps_bind_count",
	}
	if len(rows) < len(pgbouncer) || !slices.Equal(rows[:len(pgbouncer)], pgbouncer) {
		t.Errorf("SHOW TOTALS rows\n got %q\nwant %q first", rows, pgbouncer)
	}
	wantAvg := "T database,server_assignment_count,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time," +
		"avg_client_parse_count,avg_server_parse_count,avg_bind_count"
	if !slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, wantAvg) }) {
		t.Errorf("SHOW STATS_AVERAGES: %q, want columns starting %q", got, wantAvg)
	}
}

// TestShowConfigPrintsValuesAsPgBouncerDoes: PgBouncer 1.25.2 prints a
// duration as its seconds ("%g" of them: 600, 0.5) and a boolean as 0 or 1
// (libusual cfparser.c cf_get_time_usec, cf_get_int; read from it by hand),
// so a script reading SHOW CONFIG's value, or its default, as a number
// reads pgferry's too. Tables (client_entra) are not settings a line can
// show, as [databases] is not.
func TestShowConfigPrintsValuesAsPgBouncerDoes(t *testing.T) {
	b := newFakeBackend()
	b.cfg.AuthFailureDelay = configs.Duration(500 * time.Millisecond)
	b.cfg.SoReuseport = true
	got, err := run(t, b, &fakeSession{}, false, frames(t, &pgproto3.Query{String: "SHOW CONFIG"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	rows := map[string]string{}
	for _, line := range got {
		if row, ok := strings.CutPrefix(line, "D "); ok {
			f := strings.Split(row, "|")
			rows[f[0]] = f[1] + "|" + f[2]
		}
	}
	for key, want := range map[string]string{
		"server_idle_timeout":       "600|600",
		"query_wait_timeout":        "120|120",
		"server_lifetime":           "3600|3600",
		"auth_failure_delay":        "0.5|0",
		"so_reuseport":              "1|0",
		"server_reset_query_always": "0|0",
		"max_client_conn":           "10000|10000",
		"pool_mode":                 "transaction|transaction",
	} {
		if rows[key] != want {
			t.Errorf("SHOW CONFIG %s: value|default %q, want %q", key, rows[key], want)
		}
	}
	if v, ok := rows["client_entra"]; ok {
		t.Errorf("SHOW CONFIG lists the client_entra table as %q", v)
	}
}

// TestShowListsHasPgBouncer125sRows: the rows of SHOW LISTS, in PgBouncer
// 1.25.2's order (admin.c admin_show_lists; read from it by hand).
func TestShowListsHasPgBouncer125sRows(t *testing.T) {
	b := newFakeBackend()
	b.cfg.Peers = map[string]configs.Peer{"1": {Host: "10.0.0.1"}, "2": {Host: "10.0.0.2"}}
	got, err := run(t, b, &fakeSession{}, false, frames(t, &pgproto3.Query{String: "SHOW LISTS"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	var names []string
	for _, line := range got {
		if row, ok := strings.CutPrefix(line, "D "); ok {
			names = append(names, strings.Split(row, "|")[0])
			if strings.HasPrefix(row, "peers|") && row != "peers|2" {
				t.Errorf("SHOW LISTS row %q, want peers|2", row)
			}
		}
	}
	want := []string{"databases", "users", "peers", "pools", "peer_pools", "free_clients", "used_clients", "login_clients",
		"free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"}
	if !slices.Equal(names, want) {
		t.Errorf("SHOW LISTS rows\n got %q\nwant %q", names, want)
	}
}

// TestShutdownTakesPgBouncersWaitForServers: PgBouncer 1.23+'s SHUTDOWN
// WAIT_FOR_SERVERS (admin.c admin_cmd_shutdown) stops taking clients and
// exits once no server is in use, which is what pgferry's SHUTDOWN does;
// WAIT_FOR_CLIENTS, which waits for every client to leave, pgferry refuses
// with a reason; any other word is a syntax error, as in PgBouncer.
func TestShutdownTakesPgBouncersWaitForServers(t *testing.T) {
	b := newFakeBackend()
	got, err := run(t, b, &fakeSession{}, true, frames(t,
		&pgproto3.Query{String: "SHUTDOWN WAIT_FOR_SERVERS"},
		&pgproto3.Query{String: "shutdown wait_for_clients;"},
		&pgproto3.Query{String: "SHUTDOWN NOW"}))
	if !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	if !slices.Equal(b.calls, []string{"Shutdown"}) {
		t.Errorf("backend calls %q, want one Shutdown", b.calls)
	}
	want := []string{
		"E ERROR 0A000 SHUTDOWN is not available: no shutdown action is configured", "Z I",
		"E ERROR 0A000 SHUTDOWN WAIT_FOR_CLIENTS is not supported by pgferry: its SHUTDOWN lets the transactions in flight finish (up to shutdown_timeout), not the clients", "Z I",
		"E ERROR 08P01 invalid command 'SHUTDOWN NOW', use SHOW HELP;", "Z I",
	}
	if !slices.Equal(got, want) {
		t.Errorf("answer\n got %q\nwant %q", got, want)
	}
}

// TestShowDatabasesHasPgBouncer125sColumns: SHOW DATABASES has PgBouncer
// 1.25.2's columns in its order (admin.c admin_show_databases), then
// pgferry's auth: force_user NULL without one, server_lifetime in seconds,
// load_balance_hosts NULL (pgferry does not balance over a host list),
// max_client_connections 0 (no limit), and current_client_connections, the
// database's clients.
func TestShowDatabasesHasPgBouncer125sColumns(t *testing.T) {
	b := newFakeBackend()
	b.cfg.Databases = map[string]configs.Database{"app": {Host: "db", Port: 5432, PoolSize: 5, ReservePool: 2, MaxDBConnections: 8}}
	b.snap.Pools = []PoolInfo{
		{Database: "app", User: "a", ClientsActive: 1, ClientsWaiting: 2, ClientsIdle: 3, Stat: pool.Stat{Total: 4}},
		{Database: "app", User: "b", ClientsIdle: 1},
	}
	_, rows := showTyped(t, b, "SHOW DATABASES")
	want := []string{"app|db|5432|app|NULL|5|0|2|3600||NULL|8|4|0|7|0|0|password"}
	if !slices.Equal(rows, want) {
		t.Errorf("SHOW DATABASES rows\n got %q\nwant %q", rows, want)
	}
}

// TestShowUsersHasPgBouncer125sLimitsAndCounts: SHOW USERS answers PgBouncer
// 1.25.2's columns (admin.c admin_show_users; read from it by hand): a user
// of [users] or auth_file, of a pool or of a client now, its pool_mode (NULL when it
// inherits), the max_user_connections in force, its server connections,
// no client limit (0) and its clients. pool_size and reserve_pool_size are
// text in PgBouncer ("%9d"), "" for a user that sets none.
func TestShowUsersHasPgBouncer125sLimitsAndCounts(t *testing.T) {
	b := newFakeBackend()
	b.cfg.MaxUserConnections = 9
	three, zero := 3, 0
	b.cfg.Users = map[string]configs.User{"bob": {PoolMode: "session", PoolSize: &three, ReservePoolSize: &zero, MaxUserConnections: 3}, "carol": {}}
	b.snap.Pools = []PoolInfo{
		{Database: "app", User: "app", Stat: pool.Stat{Total: 4}},
		{Database: "other", User: "app", Stat: pool.Stat{Total: 2}},
		{Database: "app", User: "bob", Stat: pool.Stat{Total: 1}},
	}
	b.clients = []ClientInfo{{ID: 1, User: "app"}, {ID: 2, User: "app"}, {ID: 3, User: "admin"}}
	b.authUsers = []string{"dave", "app"} // auth_file's, logged in or not
	cols, rows := showTyped(t, b, "SHOW USERS")
	wantCols := []string{"name:25", "pool_size:25", "reserve_pool_size:25", "pool_mode:25",
		"max_user_connections:23", "current_connections:23", "max_user_client_connections:23", "current_client_connections:23"}
	if !slices.Equal(cols, wantCols) {
		t.Errorf("columns\n got %q\nwant %q", cols, wantCols)
	}
	want := []string{
		"admin|||NULL|9|0|0|1",
		"app|||NULL|9|6|0|2",
		"bob|        3|        0|session|3|1|0|0",
		"carol|||NULL|9|0|0|0",
		"dave|||NULL|9|0|0|0",
	}
	if !slices.Equal(rows, want) {
		t.Errorf("rows\n got %q\nwant %q", rows, want)
	}
}

// TestShowDatabasesPausedIsTheDatabasesOwnPause: SHOW DATABASES' paused is
// PgBouncer 1.25.2's db_paused (admin.c admin_show_databases), set by
// PAUSE db and KILL db, whether or not the database has a pool: under
// PAUSE of the whole pooler PgBouncer answers 0 for every database (seen
// by hand, the same ini file for both), and 1 for a database paused on
// its own before any client used it. pgferry answered its pools' flags: 1
// for each database with a pool under PAUSE, 0 for one without a pool.
func TestShowDatabasesPausedIsTheDatabasesOwnPause(t *testing.T) {
	b := newFakeBackend()
	b.cfg.Databases = map[string]configs.Database{"app": {Host: "db", Port: 5432}, "quiet": {Host: "db", Port: 5432}}
	b.snap.Pools = []PoolInfo{{Database: "app", User: "a", Stat: pool.Stat{Paused: true}}}
	paused := func() map[string]string {
		t.Helper()
		cols, rows := showTyped(t, b, "SHOW DATABASES")
		col := slices.Index(cols, "paused:23")
		if col < 0 {
			t.Fatalf("no paused column (int4) in %q", cols)
		}
		out := map[string]string{}
		for _, r := range rows {
			f := strings.Split(r, "|")
			out[f[0]] = f[col]
		}
		return out
	}
	b.pause.pauseAll()
	if got, want := paused(), map[string]string{"app": "0", "quiet": "0"}; !maps.Equal(got, want) {
		t.Errorf("under PAUSE: paused %v, PgBouncer answers %v", got, want)
	}
	b.pause.resumeAll()
	b.snap.Pools[0].Stat.Paused = false
	b.pause.pauseDBs("quiet")
	if got, want := paused(), map[string]string{"app": "0", "quiet": "1"}; !maps.Equal(got, want) {
		t.Errorf("under PAUSE quiet, its pool not made yet: paused %v, PgBouncer answers %v", got, want)
	}
}

// TestShowDatabasesListsWhatTheWildcardMadeNotTheWildcard: with a "*"
// entry, SHOW DATABASES lists the databases clients reached through it
// (here postgres, which has a pool), as PgBouncer 1.25.2 lists those it
// registered, and not a row named "*" with an empty database, which
// PgBouncer never shows (seen by hand, the same ini file for both) and
// pgferry did.
func TestShowDatabasesListsWhatTheWildcardMadeNotTheWildcard(t *testing.T) {
	b := newFakeBackend()
	b.cfg.Databases = map[string]configs.Database{"*": {Host: "db", Port: 5432, PoolSize: 7}, "app": {Host: "db", Port: 5432, PoolSize: 3}}
	b.snap.Pools = []PoolInfo{{Database: "postgres", User: "a", ClientsIdle: 1, Stat: pool.Stat{Total: 1}}}
	_, rows := showTyped(t, b, "SHOW DATABASES")
	want := []string{
		"app|db|5432|app|NULL|3|0|0|3600||NULL|0|0|0|0|0|0|password",
		"postgres|db|5432|postgres|NULL|7|0|0|3600||NULL|0|1|0|1|0|0|password",
	}
	if !slices.Equal(rows, want) {
		t.Errorf("SHOW DATABASES rows\n got %q\nwant %q", rows, want)
	}
}
