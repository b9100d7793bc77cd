package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// backendSampler counts the server backends of database app (other than
// its own) every few milliseconds and keeps the highest count seen.
type backendSampler struct {
	conn    *pgx.Conn
	highest atomic.Int64 // since the start
	phase   atomic.Int64 // since the last takePhase
	last    atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func sampleBackends(t *testing.T, dsn string) *backendSampler {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	s := &backendSampler{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			var n int64
			err := conn.QueryRow(context.Background(), `select count(*) from pg_stat_activity
				where datname = 'app' and backend_type = 'client backend' and pid <> pg_backend_pid()`).Scan(&n)
			if err != nil {
				t.Errorf("sampling pg_stat_activity: %v", err)
				return
			}
			s.last.Store(n)
			if n > s.highest.Load() {
				s.highest.Store(n)
			}
			if n > s.phase.Load() {
				s.phase.Store(n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *backendSampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
		s.conn.Close(context.Background())
	}
}

// fleetMember is one pgferry process of the fleet with a pgbench run
// through it.
type fleetMember struct {
	id, port, metricsPort int
	cmd                   *exec.Cmd
	bench                 *exec.Cmd
	out                   strings.Builder
}

func TestAFleetStaysWithinItsServerConnectionBudgetAsInstancesComeAndGo(t *testing.T) {
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	dir := t.TempDir()
	bin := buildPgferry(t, dir)
	pgbench := pgtest.Binary("pgbench")
	script := filepath.Join(dir, "hold.sql")
	// Each transaction holds a server connection for 100 ms, so 8 clients
	// per instance want more connections than any share.
	os.WriteFile(script, []byte("select pg_sleep(0.1);\n"), 0o600)

	const budget = 6
	members := make([]*fleetMember, 4)
	ports, err := pgtest.FreePorts(2 * len(members))
	if err != nil {
		t.Fatal(err)
	}
	for i := range members {
		members[i] = &fleetMember{id: i + 1, port: ports[2*i], metricsPort: ports[2*i+1]}
	}
	configFor := func(m *fleetMember) string {
		var peers strings.Builder
		for _, o := range members {
			if o != m {
				fmt.Fprintf(&peers, "%d = { host = \"127.0.0.1\", port = %d }\n", o.id, o.port)
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("pgferry-%d.toml", m.id))
		os.WriteFile(path, []byte(fmt.Sprintf(`
listen_addr = "127.0.0.1"
listen_port = %d
metrics_listen = "127.0.0.1:%d"
shutdown_timeout = "3s"
log_level = "info"
default_pool_size = 10
query_wait_timeout = "60s"
peer_id = %d
fleet_max_db_connections = %d
fleet_interval = "200ms"
[peers]
%s
[users.app]
password = %q
[databases.app]
host = %q
port = %d
password = %q
`, m.port, m.metricsPort, m.id, budget, peers.String(), pgtest.AppPassword, cluster.Host, cluster.Port, pgtest.AppPassword)), 0o600)
		return path
	}
	dsn := func(m *fleetMember) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=app password=%s sslmode=disable", m.port, pgtest.AppPassword)
	}
	var wg sync.WaitGroup
	start := func(m *fleetMember) {
		m.cmd = startFerry(t, bin, configFor(m), dsn(m))
		m.bench = exec.Command(pgbench, "-n", "-c", "8", "-j", "2", "-T", "30", "-f", script, dsn(m))
		m.bench.Stdout, m.bench.Stderr = &m.out, &m.out
		if err := m.bench.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); m.bench.Wait() }()
		t.Cleanup(func() { m.bench.Process.Kill() })
	}

	sampler := sampleBackends(t, cluster.DSN(pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword))
	// settled waits until every live instance counts the others and no
	// one else, their shares add up to the budget, and the fleet holds
	// the whole budget: so the test also fails if shares were too small.
	settled := func(what string, live ...*fleetMember) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			shares, agreed := 0, true
			for _, m := range live {
				v := scrapeMetrics(t, m.metricsPort)
				agreed = agreed && v["pgferry_fleet_members"] == float64(len(live)) &&
					v["pgferry_fleet_peers"] == float64(len(live)-1)
				shares += int(v[`pgferry_fleet_share_connections{budget="db/app"}`])
			}
			held := sampler.last.Load()
			if agreed && shares == budget && held == budget {
				t.Logf("%s: %d instances share %d server connections (at most %d at once on the way)", what, len(live), held, sampler.phase.Swap(0))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: instances agree on the members: %v; shares add up to %d; the fleet holds %d server connections; want the whole budget of %d",
					what, agreed, shares, held, budget)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	start(members[0])
	settled("one instance", members[0])
	start(members[1])
	start(members[2])
	settled("three instances", members[0], members[1], members[2])
	start(members[3])
	settled("four instances", members...)
	// A clean shutdown: its peers count its connections until they close.
	members[0].cmd.Process.Signal(syscall.SIGTERM)
	members[0].cmd.Wait()
	settled("after one instance shut down", members[1:]...)
	// A crash: its connections end when the server notices.
	members[1].cmd.Process.Kill()
	members[1].cmd.Wait()
	settled("after one instance was killed", members[2:]...)
	members[2].cmd.Process.Signal(syscall.SIGTERM)
	members[2].cmd.Wait()
	settled("with one instance left", members[3])

	sampler.close()
	if got := sampler.highest.Load(); got > budget {
		t.Errorf("the fleet held %d server connections at once, over its budget of %d", got, budget)
	} else {
		t.Logf("at most %d server connections at once, budget %d, while 4 instances came and went", got, budget)
	}
	for _, m := range members {
		m.bench.Process.Kill()
	}
	wg.Wait()
	members[3].cmd.Process.Signal(syscall.SIGTERM)
	if err := members[3].cmd.Wait(); err != nil {
		t.Errorf("the last instance did not exit cleanly: %v", err)
	}
}

// scrapeMetrics reads pgferry's /metrics into name{labels} -> value.
func scrapeMetrics(t *testing.T, port int) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil // not up yet, or gone
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	values := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			values[line[:i]] = v
		}
	}
	return values
}
