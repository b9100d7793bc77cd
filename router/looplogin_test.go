package router_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router"
)

// loopLoginConfig is a configuration with a database of the test's own
// and the relay loop on (whatever PGFERRY_TEST_RELAY_LOOP says: the loop
// is what these tests are about).
func loopLoginConfig(t *testing.T) *configs.Config {
	t.Helper()
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	return cfg
}

// loginCounters returns the logins the relay loop saw through and those it
// handed to a goroutine.
func loginCounters(f *ferrytest.Ferry) (loop, handoffs uint64) {
	return router.LoopLogins(f.Server), router.LoginHandoffs(f.Server)
}

// warmPool logs one client in and out: the pool and its greeting exist
// from then on, which a login on the loop needs (the first login is a
// goroutine's).
func warmPool(t *testing.T, f *ferrytest.Ferry, dsn string) {
	t.Helper()
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, dsn)
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	clientsDropTo(t, f, 0)
}

// clientsDropTo waits until pgferry counts n clients.
func clientsDropTo(t *testing.T, f *ferrytest.Ferry, n int64) {
	t.Helper()
	ferrytest.Eventually(t, 10*time.Second, "the client count to drop back", func() (bool, error) {
		return router.Clients(f.Server) == n, nil
	})
}

func TestAClientLogsInOnTheRelayLoopWithEachPasswordMethodTheLoopRuns(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	sum := md5.Sum([]byte(ferrytest.Password + ferrytest.User))
	for _, c := range []struct{ name, authType, secret string }{
		{"scram-sha-256", "scram-sha-256", ferrytest.Password},
		{"md5 against an md5 secret", "md5", "md5" + hex.EncodeToString(sum[:])},
		{"md5 against a plain secret (SCRAM, as PgBouncer)", "md5", ferrytest.Password},
		{"trust", "trust", ferrytest.Password},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg := loopLoginConfig(t)
			cfg.AuthType = c.authType
			cfg.Users[ferrytest.User] = configs.User{Password: configs.Secret(c.secret)}
			f := ferrytest.Start(t, cfg)
			warmPool(t, f, f.AppDSN())
			if loop, handoffs := loginCounters(f); loop != 0 || handoffs != 1 {
				t.Fatalf("the pool's first login: %d on the loop, %d handed to a goroutine; want 0 and 1 (no greeting to send yet)", loop, handoffs)
			}
			for i := 1; i <= 3; i++ {
				conn := ferrytest.Connect(t, ctx, f.AppDSN())
				var n int
				if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("client %d's query: %d, %v", i, n, err)
				}
				if loop, handoffs := loginCounters(f); loop != uint64(i) || handoffs != 1 {
					t.Fatalf("after %d more clients: %d logins on the loop, %d handed off; want %d and 1", i, loop, handoffs, i)
				}
				conn.Close(ctx)
			}
			if got := f.Pool(t, "app").Counters.ClientLogins; got != 4 {
				t.Errorf("the pool counts %d client logins; want 4", got)
			}
		})
	}
}

func TestAWrongPasswordOnTheRelayLoopIsRefusedAsOnAGoroutine(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	sum := md5.Sum([]byte(ferrytest.Password + ferrytest.User))
	for _, c := range []struct{ name, authType, secret string }{
		{"scram-sha-256", "scram-sha-256", ferrytest.Password},
		{"md5", "md5", "md5" + hex.EncodeToString(sum[:])},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg := loopLoginConfig(t)
			cfg.AuthType = c.authType
			cfg.Users[ferrytest.User] = configs.User{Password: configs.Secret(c.secret)}
			hooks := &countingHooks{}
			f := ferrytest.Start(t, cfg, func(o *router.Options) { o.Hooks = hooks })
			warmPool(t, f, f.AppDSN())
			_, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, "not-the-password"))
			pe := expectPgError(t, err, "28P01")
			if want := `password authentication failed for user "app"`; pe.Message != want {
				t.Errorf("message %q; want %q", pe.Message, want)
			}
			// A user the auth file does not list goes through SCRAM's mock
			// exchange on the loop too: refused as a wrong password, and
			// answered where a known user is, so that the time it takes
			// does not tell that the user does not exist.
			_, err = pgx.Connect(ctx, f.DSN("app", "nobody", "not-the-password"))
			pe = expectPgError(t, err, "28P01")
			if want := `password authentication failed for user "nobody"`; pe.Message != want {
				t.Errorf("message %q; want %q", pe.Message, want)
			}
			if _, handoffs := loginCounters(f); handoffs != 1 {
				t.Errorf("%d logins handed off; want only the first client's (the loop refused the others)", handoffs)
			}
			if got := hooks.rejected("auth"); got != 2 {
				t.Errorf("%d clients counted as rejected for auth; want 2", got)
			}
			clientsDropTo(t, f, 0)
			assertServes(t, ctx, f)
		})
	}
}

func TestLoginsTheLoopDoesNotRunAreHandedToAGoroutineAndSucceedOrFailThere(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg := loopLoginConfig(t)
	offerClientTLS(cfg, "allow")
	f := ferrytest.Start(t, cfg)
	warmPool(t, f, f.AppDSN())
	handedOff := func(what string, connect func() error, wantErr string) {
		t.Helper()
		loop0, hand0 := loginCounters(f)
		err := connect()
		var pe *pgconn.PgError
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%s: %v", what, err)
		case wantErr != "" && (!errors.As(err, &pe) || pe.Code != wantErr):
			t.Fatalf("%s: got %v; want SQLSTATE %s", what, err, wantErr)
		}
		if loop, hand := loginCounters(f); loop != loop0 || hand != hand0+1 {
			t.Fatalf("%s: %d logins on the loop, %d handed off; want none and one", what, loop-loop0, hand-hand0)
		}
	}
	query := func(dsn string) func() error {
		return func() error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var on bool
			return conn.QueryRow(ctx, "select true").Scan(&on)
		}
	}
	tlsDSN := strings.Replace(f.AppDSN(), "sslmode=disable", "sslmode=require", 1)
	handedOff("a client that asks for TLS", query(tlsDSN), "")
	handedOff("a client of a database that is not configured", query(f.DSN("nosuchdb", ferrytest.User, ferrytest.Password)), "3D000")
	handedOff("the admin console", func() error {
		conn, err := pgconn.Connect(ctx, f.DSN("pgbouncer", "admin", "admin-secret"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "SHOW VERSION").ReadAll()
		return err
	}, "")
	loop0, _ := loginCounters(f)
	if err := query(f.AppDSN())(); err != nil {
		t.Fatal(err)
	}
	if loop, _ := loginCounters(f); loop != loop0+1 {
		t.Fatalf("a plain client after them did not log in on the loop")
	}
}

func TestTheLoopTakesAStartupPacketInPiecesAndARequestSentWithIt(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	cfg := loopLoginConfig(t)
	cfg.AuthType = "trust"
	f := ferrytest.Start(t, cfg)
	warmPool(t, f, f.AppDSN())
	c := dialFerry(t, f)
	// An SSLRequest (answered N: this pgferry offers no TLS), then the
	// startup packet one byte at a time, then a query in the same write as
	// the packet's last byte: trust answers at once, and the query is the
	// session's first request.
	sendRaw(t, c, startupPacket(sslRequestCode, nil))
	var n [1]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(n[:]); err != nil || n[0] != 'N' {
		t.Fatalf("answer to SSLRequest: %q, %v; want N", n[0], err)
	}
	st := startupMessage(t, ferrytest.User, "app")
	for _, b := range st[:len(st)-1] {
		sendRaw(t, c, []byte{b})
		time.Sleep(time.Millisecond)
	}
	sendRaw(t, c, append([]byte{st[len(st)-1]}, encode(t, &pgproto3.Query{String: "select 41 + 1"})...))
	ready := 0
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool {
		if fr.typ == 'Z' {
			ready++
		}
		return ready == 2 || fr.typ == 'E'
	})
	if err != nil {
		t.Fatalf("frames %s: %v", describe(frames), err)
	}
	data := 0
	ready = 0
	for _, fr := range frames {
		switch fr.typ {
		case 'D':
			data++
			if !strings.Contains(string(fr.body), "42") {
				t.Errorf("row %q; want 42", fr.body)
			}
		case 'Z':
			ready++
		case 'E':
			t.Fatalf("error: %v", errorFields(fr.body))
		}
	}
	if data != 1 || ready != 2 {
		t.Fatalf("frames %s: want the greeting's ReadyForQuery, one row and a second ReadyForQuery", describe(frames))
	}
	if loop, handoffs := loginCounters(f); loop != 1 || handoffs != 1 {
		t.Fatalf("%d logins on the loop, %d handed off; want 1 and the first client's", loop, handoffs)
	}
}

func TestALoginOnTheLoopThatStallsIsEndedAtClientLoginTimeout(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	f, c := aStalledLogin(t)
	frames := readUntilClosed(t, c)
	errs := errorsIn(frames)
	if len(errs) != 1 || errs[0]['C'] != "08P01" || errs[0]['M'] != "client_login_timeout" {
		t.Fatalf("frames %s: want the SASL request, then FATAL 08P01 client_login_timeout", describe(frames))
	}
	if frames[0].typ != 'R' {
		t.Fatalf("frames %s: want the SASL request first", describe(frames))
	}
	if _, handoffs := loginCounters(f); handoffs != 1 {
		t.Fatalf("%d logins handed off; want only the first client's (the loop timed this one out)", handoffs)
	}
	clientsDropTo(t, f, 0)
}

func TestAClientThatLeavesInTheMiddleOfItsLoginOnTheLoopIsLetGo(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg := loopLoginConfig(t)
	hooks := &countingHooks{}
	f := ferrytest.Start(t, cfg, func(o *router.Options) { o.Hooks = hooks })
	warmPool(t, f, f.AppDSN())
	for i := 0; i < 20; i++ {
		c := dialFerry(t, f)
		if i%4 == 3 {
			// Before its startup packet: counted as a protocol
			// rejection, as on a goroutine.
			c.Close()
			continue
		}
		sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
		if i%2 == 0 {
			// After the SASL request came.
			if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' }); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
	clientsDropTo(t, f, 0)
	if _, handoffs := loginCounters(f); handoffs != 1 {
		t.Fatalf("%d logins handed off; want only the first client's", handoffs)
	}
	ferrytest.Eventually(t, 10*time.Second, "the 5 clients that sent no startup packet to be counted as rejected for protocol", func() (bool, error) {
		return hooks.rejected("protocol") == 5, nil
	})
	assertServes(t, ctx, f)
}

func TestShutdownEndsALoginOnTheLoopThatStallsAtClientLoginTimeout(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	f, c := aStalledLogin(t)
	if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' }); err != nil {
		t.Fatal(err)
	}
	// Shutdown waits for every client; a login that stalls is not a
	// session it can wake or kill, so the loop ends it at its timeout,
	// as a goroutine would.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- f.Server.Shutdown(ctx) }()
	frames := readUntilClosed(t, c)
	if errs := errorsIn(frames); len(errs) != 1 || errs[0]['M'] != "client_login_timeout" {
		t.Fatalf("frames %s: want FATAL client_login_timeout", describe(frames))
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Shutdown did not return")
	}
	if ctx.Err() != nil {
		t.Fatal("Shutdown returned only at its deadline")
	}
}

// aStalledLogin starts pgferry with a client_login_timeout of a second
// and a pool that has greeted a client, and connects a client that sends
// its startup packet and then never answers SCRAM's request.
func aStalledLogin(t *testing.T) (*ferrytest.Ferry, net.Conn) {
	t.Helper()
	cfg := loopLoginConfig(t)
	cfg.ClientLoginTimeout = configs.Duration(time.Second)
	f := ferrytest.Start(t, cfg)
	warmPool(t, f, f.AppDSN())
	c := dialFerry(t, f)
	sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
	return f, c
}

// countingHooks counts the clients pgferry rejects, by reason.
type countingHooks struct {
	mu      sync.Mutex
	reasons map[string]int
}

func (h *countingHooks) ClientRejected(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reasons == nil {
		h.reasons = map[string]int{}
	}
	h.reasons[reason]++
}

func (h *countingHooks) rejected(reason string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reasons[reason]
}

func (h *countingHooks) PoolHooks(string, string) pool.Hooks { return noPoolHooks{} }

type noPoolHooks struct{}

func (noPoolHooks) WaitObserved(time.Duration)         {}
func (noPoolHooks) LoginObserved(time.Duration, error) {}
func (noPoolHooks) OutageEnded(time.Duration)          {}

func TestTheLoopAcceptsClientsItselfUntilAReloadTurnsItOffAndShutdownClosesThePort(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg := loopLoginConfig(t)
	f := ferrytest.Start(t, cfg)
	served := func(what string) {
		t.Helper()
		conn := ferrytest.Connect(t, ctx, f.AppDSN())
		var n int
		if err := conn.QueryRow(ctx, "select 5", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 5 {
			t.Fatalf("%s: %d, %v", what, n, err)
		}
		conn.Close(ctx)
	}
	served("a client of the loop")
	served("another")
	if n := router.LoopAccepts(f.Server); n != 2 {
		t.Fatalf("the loop accepted %d clients; want both", n)
	}

	// Turned off by a reload, the loop gives accepting back at its next
	// client, which it does not accept; the accept goroutine serves that
	// one and the next, as net.Conns on goroutines.
	off := *f.Server.Config()
	off.RelayLoop = false
	if err := f.Server.Reload(&off); err != nil {
		t.Fatal(err)
	}
	served("the first client after the loop was turned off")
	served("the second")
	if n := router.LoopAccepts(f.Server); n != 2 {
		t.Fatalf("the loop accepted %d clients; want still 2 after it was turned off", n)
	}
	on := off
	on.RelayLoop = true
	if err := f.Server.Reload(&on); err != nil {
		t.Fatal(err)
	}
	served("the first client after the loop was turned on again")
	served("the second")
	ferrytest.Eventually(t, 10*time.Second, "the loop to accept again", func() (bool, error) {
		served("one more")
		return router.LoopAccepts(f.Server) > 2, nil
	})
	// The duplicate the accept goroutine waited on while the loop was off
	// is closed again: in Go's netpoller, it would wake a thread there at
	// every client the loop accepts.
	if n := router.ListenerWaitersOpen(f.Server); n != 0 {
		t.Errorf("%d listeners keep the accept goroutine's duplicate open while the loop accepts; want 0", n)
	}

	// Shutdown closes the port the loop accepts on, and returns.
	addr := f.Addr.String()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.Server.Shutdown(sctx)
	if sctx.Err() != nil {
		t.Fatal("Shutdown returned only at its deadline")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts connections after Shutdown")
	}
}
