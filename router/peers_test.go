package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/router"
)

// roundRobin is a TCP load balancer for tests: each new connection goes to
// the next backend in turn, as a Kubernetes Service may send a client's
// cancel request to another pod than its session.
type roundRobin struct {
	ln       net.Listener
	backends []string
	mu       sync.Mutex
	next     int
	wg       sync.WaitGroup
}

func startRoundRobin(t *testing.T, backends []string) *roundRobin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rr := &roundRobin{ln: ln, backends: backends}
	done := make(chan struct{})
	rr.wg.Add(1)
	go func() {
		defer rr.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rr.mu.Lock()
			to := rr.backends[rr.next%len(rr.backends)]
			rr.next++
			rr.mu.Unlock()
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			rr.wg.Add(3)
			go func() { defer rr.wg.Done(); io.Copy(s, c); s.Close() }()
			go func() { defer rr.wg.Done(); io.Copy(c, s); c.Close() }()
			go func() { defer rr.wg.Done(); <-done; c.Close(); s.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); close(done); rr.wg.Wait() })
	return rr
}

func (rr *roundRobin) dsn() string {
	a := rr.ln.Addr().(*net.TCPAddr)
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s password=%s sslmode=disable", a.Port, ferrytest.User, ferrytest.Password)
}

// fakeDNS answers A queries for one name with the given addresses.
func fakeDNS(t *testing.T, name string, ips []string) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if q.Type == dnsmessage.TypeA && strings.EqualFold(q.Name.String(), name+".") {
				for _, ip := range ips {
					var a [4]byte
					copy(a[:], net.ParseIP(ip).To4())
					b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a})
				}
			}
			msg, err := b.Finish()
			if err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// startFleet starts n pgferry instances with peer ids 1..n; peer(cfg, i)
// sets how instance i finds the others.
func startFleet(t *testing.T, n int, listen func(i int) (string, int), peer func(cfg *configs.Config, i int), opts ...func(*router.Options)) []string {
	t.Helper()
	var addrs []string
	for i := 1; i <= n; i++ {
		cfg := ferrytest.Config(t, cluster)
		cfg.ListenAddr, cfg.ListenPort = listen(i)
		cfg.PeerID = i
		peer(cfg, i)
		f := ferrytest.Start(t, cfg, opts...)
		addrs = append(addrs, f.Addr.String())
	}
	return addrs
}

// assertCancelsLandAnywhere runs pg_sleep(30) through the balancer and
// cancels it with pgx (whose cancel request arrives on a new connection,
// which the balancer sends to the next instance), several times, so every
// instance forwards cancels for the others.
func assertCancelsLandAnywhere(t *testing.T, rr *roundRobin) {
	t.Helper()
	ctx := testContext(t)
	for i := 0; i < 4; i++ {
		conn, err := pgx.Connect(ctx, rr.dsn())
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "select pg_sleep(30)")
			errc <- err
		}()
		waitForBackend(t, ctx, "app", "state = 'active' and query = 'select pg_sleep(30)'")
		start := time.Now()
		// What pgx does on a cancelled context, without the fallback of
		// closing the connection that would end the query anyway.
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		err = <-errc
		if code, _, _ := pgCode(err); code != "57014" {
			t.Fatalf("round %d: the query ended with %v, want 57014 (query_canceled)", i, err)
		}
		t.Logf("round %d: cancelled through another instance in %v", i, time.Since(start).Round(time.Millisecond))
		conn.Close(ctx)
	}
	// psql sends its cancel on SIGINT (Ctrl-C).
	cmd := exec.Command("psql", rr.dsn(), "-Xqc", "select pg_sleep(30)")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForBackend(t, ctx, "app", "state = 'active' and query = 'select pg_sleep(30)'")
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Fatalf("psql after Ctrl-C: %v\n%s", err, out.String())
	}
}

func TestACancelReachesTheInstanceHoldingTheSessionThroughStaticPeers(t *testing.T) {
	ports, err := pgtest.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	addrs := startFleet(t, 3,
		func(i int) (string, int) { return "127.0.0.1", ports[i-1] },
		func(cfg *configs.Config, i int) {
			cfg.Peers = map[string]configs.Peer{}
			for j := 1; j <= 3; j++ {
				if j != i {
					cfg.Peers[strconv.Itoa(j)] = configs.Peer{Host: "127.0.0.1", Port: ports[j-1]}
				}
			}
		})
	assertCancelsLandAnywhere(t, startRoundRobin(t, addrs))
}

func TestACancelReachesTheInstanceHoldingTheSessionThroughPeersFoundInDNS(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	resolver := fakeDNS(t, "pgferry-peers.test", ips)
	addrs := startFleet(t, 3,
		func(i int) (string, int) { return ips[i-1], port },
		func(cfg *configs.Config, i int) { cfg.PeersDNS = "pgferry-peers.test" },
		func(o *router.Options) { o.PeerResolver = resolver })
	assertCancelsLandAnywhere(t, startRoundRobin(t, addrs))
}

func TestACancelReachesItsInstanceWhenEveryInstanceHasTheSamePeerID(t *testing.T) {
	// A Kubernetes Deployment's pods share one ConfigMap, so one peer_id.
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	resolver := fakeDNS(t, "pgferry-peers.test", ips)
	addrs := startFleet(t, 3,
		func(i int) (string, int) { return ips[i-1], port },
		func(cfg *configs.Config, i int) { cfg.PeerID, cfg.PeersDNS = 1, "pgferry-peers.test" },
		func(o *router.Options) { o.PeerResolver = resolver })
	assertCancelsLandAnywhere(t, startRoundRobin(t, addrs))
}

func TestInstancesFoundInDNSShareAFleetBudget(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	resolver := fakeDNS(t, "pgferry-peers.test", ips)
	var fleet []*ferrytest.Ferry
	for i, ip := range ips {
		cfg := ferrytest.Config(t, cluster)
		cfg.ListenAddr, cfg.ListenPort = ip, port
		cfg.PeerID, cfg.PeersDNS = i+1, "pgferry-peers.test"
		db := cfg.Databases["app"]
		db.FleetMaxDBConnections = 7
		cfg.Databases["app"] = db
		cfg.FleetInterval = configs.Duration(100 * time.Millisecond)
		fleet = append(fleet, ferrytest.Start(t, cfg, func(o *router.Options) { o.PeerResolver = resolver }))
	}
	shares := func() (sum int, members []int) {
		for _, f := range fleet {
			st := f.Server.Snapshot().Fleet
			if st == nil {
				t.Fatal("an instance with fleet_max_db_connections reports no fleet")
			}
			sum += st.Budgets["db/app"].Cap
			members = append(members, st.Members)
		}
		return sum, members
	}
	// The budget appears once a pool of the database exists.
	ctx := testContext(t)
	for _, f := range fleet {
		conn := ferrytest.Connect(t, ctx, f.AppDSN())
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	ferrytest.Eventually(t, 10*time.Second, "three instances found in DNS share 7 connections", func() (bool, error) {
		sum, members := shares()
		if sum != 7 || !slices.Equal(members, []int{3, 3, 3}) {
			return false, fmt.Errorf("shares add up to %d, members %v", sum, members)
		}
		return true, nil
	})
}
