package router_test

// Hardening tests: pgferry facing slow, broken, hostile or vanishing clients
// and servers, always against the real PostgreSQL cluster of TestMain. This
// file holds the login, timeout and limit tests; the other
// hardening_*_test.go files hold the rest. Their helpers are in
// helpers_test.go.

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// loginTimeoutForStallTests is the client_login_timeout of the tests that
// stall a login and then check that pgferry still serves: the check's own
// login must fit in it too, and the first login through a fresh pgferry
// dials and logs in to PostgreSQL (SCRAM) on the way. 300 ms was too short
// for that once under -race on a loaded CI machine.
const loginTimeoutForStallTests = 2 * time.Second

func TestClientLoginTimeoutClosesAClientStalledInItsStartupPacket(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientLoginTimeout = configs.Duration(loginTimeoutForStallTests)
	f := ferrytest.Start(t, cfg)
	c := dialFerry(t, f)
	startup := startupMessage(t, ferrytest.User, "app")
	sendRaw(t, c, startup[:len(startup)/2])
	frames := readUntilClosed(t, c)
	for _, e := range errorsIn(frames) {
		if e['C'] != "08P01" || e['M'] != "client_login_timeout" {
			t.Fatalf("got error %v, want 08P01 client_login_timeout (or a plain close)", e)
		}
	}
	assertServes(t, testContext(t), f)
}

func TestClientLoginTimeoutClosesAClientStalledInTheSCRAMExchange(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientLoginTimeout = configs.Duration(loginTimeoutForStallTests)
	f := ferrytest.Start(t, cfg)
	c := dialFerry(t, f)
	sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
	frames := readUntilClosed(t, c)
	if len(frames) == 0 || frames[0].typ != 'R' {
		t.Fatalf("expected an authentication request before the timeout, got %s", describe(frames))
	}
	errs := errorsIn(frames)
	if len(errs) != 1 || errs[0]['S'] != "FATAL" || errs[0]['C'] != "08P01" || errs[0]['M'] != "client_login_timeout" {
		t.Fatalf("got %s, want FATAL 08P01 client_login_timeout after the SASL request", describe(frames))
	}
	assertServes(t, testContext(t), f)
}

func TestClientIdleTimeoutDisconnectsAnIdleClientWhileAnActiveOneKeepsWorking(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientIdleTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	idle := ferrytest.Connect(t, ctx, f.AppDSN())
	active := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := idle.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	// Keep the active client busy (each query resets its idle clock) until
	// pgferry has dropped the idle one.
	ferrytest.Eventually(t, 20*time.Second, "the idle client to be disconnected", func() (bool, error) {
		if _, err := active.Exec(ctx, "select 1"); err != nil {
			t.Fatalf("the active client failed: %v", err)
		}
		return f.Server.Snapshot().Clients == 1, nil
	})
	_, err := idle.Exec(ctx, "select 1")
	if err == nil {
		t.Fatal("the idle client can still run queries after client_idle_timeout")
	}
	if code, _, ok := pgCode(err); ok && code != "08P01" {
		t.Fatalf("idle client got %v, want 08P01 client_idle_timeout or a closed connection", err)
	}
	var n int
	if err := active.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the active client: %d, %v", n, err)
	}
}

func TestMaxPacketSizeRefusesAnOversizedQueryAndClosesOnlyThatClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxPacketSize = 65536
	f := ferrytest.Start(t, cfg)
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	big := ferrytest.Connect(t, ctx, f.AppDSN())
	literal := strings.Repeat("x", 200<<10)
	_, err := big.Exec(ctx, "select length('"+literal+"')", pgx.QueryExecModeSimpleProtocol)
	code, severity, ok := pgCode(err)
	if !ok || code != "08P01" || severity != "FATAL" || !strings.Contains(err.Error(), "max_packet_size") {
		t.Fatalf("got %v, want FATAL 08P01 mentioning max_packet_size", err)
	}
	if _, err := big.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the connection that sent the oversized message is still usable")
	}
	// A message just under the limit still goes through, other clients are
	// unaffected and new ones are served.
	var n int
	if err := other.QueryRow(ctx, "select length($1::text)", strings.Repeat("y", 60000)).Scan(&n); err != nil || n != 60000 {
		t.Fatalf("a message under max_packet_size: %d, %v", n, err)
	}
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

func TestAllowCIDRsRefusesAClientOutsideTheRangesBeforeAuthentication(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cidrs   []string
		allowed bool
	}{
		{"loopback outside 10.0.0.0/8 is refused", []string{"10.0.0.0/8"}, false},
		{"loopback inside 127.0.0.0/8 is allowed", []string{"127.0.0.0/8"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			cfg := ferrytest.Config(t, cluster)
			cfg.AllowCIDRs = tc.cidrs
			f := ferrytest.Start(t, cfg)
			if tc.allowed {
				assertServes(t, ctx, f)
				return
			}
			c := dialFerry(t, f)
			// The write may already fail if pgferry closed first; what
			// matters is that no authentication request comes back.
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(startupMessage(t, ferrytest.User, "app"))
			frames := readUntilClosed(t, c)
			for _, fr := range frames {
				if fr.typ == 'R' {
					t.Fatalf("a refused client was offered authentication: %s", describe(frames))
				}
			}
			if _, err := pgx.Connect(ctx, f.AppDSN()); err == nil {
				t.Fatal("pgx connected from outside allow_cidrs")
			}
		})
	}
}

func TestAuthFailureDelaySlowsButDoesNotBlockACorrectLoginAfterFiveFailures(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthFailureDelay = configs.Duration(50 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	for i := range 5 {
		_, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, "not-the-password"))
		if code, severity, ok := pgCode(err); !ok || code != "28P01" || severity != "FATAL" {
			t.Fatalf("wrong password attempt %d: got %v, want FATAL 28P01", i+1, err)
		}
	}
	assertServes(t, ctx, f)
}

func TestTrustAuthSendsAuthenticationOkBeforeTheWelcome(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthType = "trust"
	f := ferrytest.Start(t, cfg)
	// Every client library waits for AuthenticationOk (or a password
	// request) after its startup packet; libpq and pgx both refuse a
	// ParameterStatus or ReadyForQuery that comes first.
	c := dialFerry(t, f)
	sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' || fr.typ == 'E' })
	if err != nil || len(frames) == 0 || frames[0].typ != 'R' || len(frames[0].body) != 4 || binary.BigEndian.Uint32(frames[0].body) != 0 {
		t.Fatalf("got %s (%v), want AuthenticationOk first", describe(frames), err)
	}
	assertServes(t, ctx, f)
}

func TestPasswordsNeverReachPgferryLogs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const (
		clientSecret      = "cli-Secret-456"
		serverSecret      = "srv-Secret-XYZ987"
		wrongSecret       = "wrong-Secret-123"
		wrongServerSecret = "srvwrong-Secret-789"
	)
	role := "h_secret_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := cluster.CreateRole(ctx, role, serverSecret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The test database is dropped by its own cleanup, which runs
		// before this one (LIFO), so the role owns nothing by then.
		cluster.Exec(ctx, "drop role if exists "+role)
	})
	cfg, db := configWithOwnDatabase(t)
	cfg.Users["carol"] = configs.User{Password: configs.Secret(clientSecret)}
	entry := cfg.Databases["app"]
	entry.DBName, entry.User, entry.Password = db, role, configs.Secret(serverSecret)
	cfg.Databases["secret"] = entry
	entry.Password = configs.Secret(wrongServerSecret)
	cfg.Databases["badserver"] = entry
	f := ferrytest.Start(t, cfg)

	conn, err := pgx.Connect(ctx, f.DSN("secret", "carol", clientSecret))
	if err != nil {
		t.Fatal(err)
	}
	var user string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != role {
		t.Fatalf("current_user %q, %v", user, err)
	}
	conn.Close(ctx)
	if _, err := pgx.Connect(ctx, f.DSN("secret", "carol", wrongSecret)); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	if _, err := pgx.Connect(ctx, f.DSN("badserver", "carol", clientSecret)); err == nil {
		t.Fatal("login to a database with a wrong server password succeeded")
	} else if strings.Contains(err.Error(), wrongServerSecret) {
		t.Fatalf("the client error reveals the server password: %v", err)
	}

	logs := f.Logs()
	if !strings.Contains(logs, "carol") {
		t.Fatalf("expected the sessions to be logged (debug level); logs:\n%s", logs)
	}
	for _, secret := range []string{clientSecret, serverSecret, wrongSecret, wrongServerSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("pgferry logged the secret %q:\n%s", secret, logs)
		}
	}
}
