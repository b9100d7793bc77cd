package router_test

// Hardening tests: pgferry facing slow, broken, hostile or vanishing clients
// and servers, always against the real PostgreSQL cluster of TestMain. The
// helpers of this file are shared by the other hardening_*_test.go files and
// are prefixed with "h" so they do not collide with other test helpers.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// hTimeout bounds every hardening test; nothing here should come close.
const hTimeout = 60 * time.Second

func hContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hTimeout)
	t.Cleanup(cancel)
	return ctx
}

// hConfig returns a ferrytest configuration whose "app" entry points at a
// database created for this test only, so pg_stat_activity can be read
// per test even while other tests run in parallel. It returns the server
// database's name.
func hConfig(t *testing.T) (*configs.Config, string) {
	t.Helper()
	cfg := ferrytest.Config(t, cluster)
	name := cluster.CreateDatabase(t, pgtest.AppUser)
	db := cfg.Databases["app"]
	db.DBName = name
	cfg.Databases["app"] = db
	return cfg, name
}

// hPoolSize sets the pool size of database entry name (loading already
// copied default_pool_size into every entry).
func hPoolSize(cfg *configs.Config, name string, size int) {
	db := cfg.Databases[name]
	db.PoolSize = size
	cfg.Databases[name] = db
}

// hConnect connects with pgx and closes the connection when the test ends.
func hConnect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect through pgferry: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// hAssertServes checks that a brand-new client can log in through f and run
// a query.
func hAssertServes(t *testing.T, ctx context.Context, f *ferrytest.Ferry) {
	t.Helper()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatalf("a new client cannot connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "select 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("a new client cannot run a query: %d, %v", n, err)
	}
}

// hEventually polls cond every 20ms until it holds, failing the test after
// timeout with the last error cond returned.
func hEventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		<-tick.C
	}
}

// hBusyBackends counts the server backends of user app in database db that
// are running something or sit inside a transaction. The probe itself runs
// as the superuser in database postgres, so it never counts itself.
func hBusyBackends(ctx context.Context, db string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cluster.QueryInt(ctx, `select count(*) from pg_stat_activity
		where datname = $1 and usename = 'app'
		and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')`, db)
}

// hWaitNoBusyBackends waits until database db has no busy backend of user
// app left.
func hWaitNoBusyBackends(t *testing.T, ctx context.Context, db string) {
	t.Helper()
	hEventually(t, 20*time.Second, "no active or idle-in-transaction backend of user app in "+db, func() (bool, error) {
		n, err := hBusyBackends(ctx, db)
		return n == 0, err
	})
}

// hWaitForBackend waits until a backend of database db matches the SQL
// condition cond on pg_stat_activity.
func hWaitForBackend(t *testing.T, ctx context.Context, db, cond string) {
	t.Helper()
	hEventually(t, 20*time.Second, "a backend in "+db+" where "+cond, func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := cluster.QueryInt(qctx, "select count(*) from pg_stat_activity where datname = $1 and "+cond, db)
		return n > 0, err
	})
}

// hDial opens a raw TCP connection to pgferry, closed when the test ends.
func hDial(t *testing.T, f *ferrytest.Ferry) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.Addr.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hStartupFrame encodes a protocol 3.0 StartupMessage.
func hStartupFrame(t *testing.T, user, database string) []byte {
	t.Helper()
	b, err := (&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": database},
	}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hEncode encodes a frontend message.
func hEncode(t *testing.T, msg pgproto3.FrontendMessage) []byte {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hWrite writes b to c, failing the test on error.
func hWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write to pgferry: %v", err)
	}
}

// hFrame is one backend message read off a raw connection.
type hFrame struct {
	typ  byte
	body []byte
}

// hErrorFields decodes an ErrorResponse or NoticeResponse body into its
// fields keyed by field code ('S', 'C', 'M', ...).
func hErrorFields(body []byte) map[byte]string {
	fields := make(map[byte]string)
	for len(body) > 0 && body[0] != 0 {
		code := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		fields[code] = string(body[1 : 1+end])
		body = body[2+end:]
	}
	return fields
}

// hReadUntilClosed reads backend frames from c until pgferry closes the
// connection; it fails the test if that does not happen within 10 s (the
// connection was left hanging). A connection reset counts as closed.
func hReadUntilClosed(t *testing.T, c net.Conn) []hFrame {
	t.Helper()
	frames, closed, err := hReadFrames(c, 10*time.Second, nil)
	if !closed {
		t.Fatalf("pgferry did not close the connection (read: %v; frames so far: %s)", err, hDescribe(frames))
	}
	return frames
}

// hReadFrames reads frames until the connection closes, until stop (if
// non-nil) returns true for a frame, or until timeout. closed reports an
// EOF or reset.
func hReadFrames(c net.Conn, timeout time.Duration, stop func(hFrame) bool) (frames []hFrame, closed bool, err error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var buf []byte
	chunk := make([]byte, 8192)
	for {
		for len(buf) >= 5 {
			n := int(binary.BigEndian.Uint32(buf[1:5]))
			if n < 4 || len(buf) < 1+n {
				break
			}
			fr := hFrame{typ: buf[0], body: append([]byte(nil), buf[5:1+n]...)}
			frames = append(frames, fr)
			buf = buf[1+n:]
			if stop != nil && stop(fr) {
				return frames, false, nil
			}
		}
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset") {
				return frames, true, err
			}
			return frames, false, err
		}
	}
}

// hErrors returns the decoded ErrorResponses among frames.
func hErrors(frames []hFrame) []map[byte]string {
	var out []map[byte]string
	for _, f := range frames {
		if f.typ == 'E' {
			out = append(out, hErrorFields(f.body))
		}
	}
	return out
}

func hDescribe(frames []hFrame) string {
	var b strings.Builder
	for i, f := range frames {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteByte(f.typ)
		if f.typ == 'E' {
			fl := hErrorFields(f.body)
			b.WriteString("(" + fl['S'] + " " + fl['C'] + " " + strconv.Quote(fl['M']) + ")")
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// hPgCode returns the SQLSTATE and severity of a *pgconn.PgError in err.
func hPgCode(err error) (code, severity string, ok bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Severity, true
	}
	return "", "", false
}

// hAssertNoPanic fails the test if pgferry logged a recovered panic.
func hAssertNoPanic(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	if logs := f.Logs(); strings.Contains(logs, "panicked") {
		t.Fatalf("pgferry recovered a panic:\n%s", logs)
	}
}

func TestClientLoginTimeoutClosesAClientStalledInItsStartupPacket(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientLoginTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	c := hDial(t, f)
	startup := hStartupFrame(t, ferrytest.User, "app")
	hWrite(t, c, startup[:len(startup)/2])
	frames := hReadUntilClosed(t, c)
	for _, e := range hErrors(frames) {
		if e['C'] != "08P01" || e['M'] != "client_login_timeout" {
			t.Fatalf("got error %v, want 08P01 client_login_timeout (or a plain close)", e)
		}
	}
	hAssertServes(t, hContext(t), f)
}

func TestClientLoginTimeoutClosesAClientStalledInTheSCRAMExchange(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientLoginTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	c := hDial(t, f)
	hWrite(t, c, hStartupFrame(t, ferrytest.User, "app"))
	frames := hReadUntilClosed(t, c)
	if len(frames) == 0 || frames[0].typ != 'R' {
		t.Fatalf("expected an authentication request before the timeout, got %s", hDescribe(frames))
	}
	errs := hErrors(frames)
	if len(errs) != 1 || errs[0]['S'] != "FATAL" || errs[0]['C'] != "08P01" || errs[0]['M'] != "client_login_timeout" {
		t.Fatalf("got %s, want FATAL 08P01 client_login_timeout after the SASL request", hDescribe(frames))
	}
	hAssertServes(t, hContext(t), f)
}

func TestClientIdleTimeoutDisconnectsAnIdleClientWhileAnActiveOneKeepsWorking(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientIdleTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	idle := hConnect(t, ctx, f.AppDSN())
	active := hConnect(t, ctx, f.AppDSN())
	if _, err := idle.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	// Keep the active client busy (each query resets its idle clock) until
	// pgferry has dropped the idle one.
	hEventually(t, 20*time.Second, "the idle client to be disconnected", func() (bool, error) {
		if _, err := active.Exec(ctx, "select 1"); err != nil {
			t.Fatalf("the active client failed: %v", err)
		}
		return f.Server.Snapshot().Clients == 1, nil
	})
	_, err := idle.Exec(ctx, "select 1")
	if err == nil {
		t.Fatal("the idle client can still run queries after client_idle_timeout")
	}
	if code, _, ok := hPgCode(err); ok && code != "08P01" {
		t.Fatalf("idle client got %v, want 08P01 client_idle_timeout or a closed connection", err)
	}
	var n int
	if err := active.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the active client: %d, %v", n, err)
	}
}

func TestMaxPacketSizeRefusesAnOversizedQueryAndClosesOnlyThatClient(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxPacketSize = 65536
	f := ferrytest.Start(t, cfg)
	other := hConnect(t, ctx, f.AppDSN())
	big := hConnect(t, ctx, f.AppDSN())
	literal := strings.Repeat("x", 200<<10)
	_, err := big.Exec(ctx, "select length('"+literal+"')", pgx.QueryExecModeSimpleProtocol)
	code, severity, ok := hPgCode(err)
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
	hAssertServes(t, ctx, f)
	hAssertNoPanic(t, f)
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
			ctx := hContext(t)
			cfg := ferrytest.Config(t, cluster)
			cfg.AllowCIDRs = tc.cidrs
			f := ferrytest.Start(t, cfg)
			if tc.allowed {
				hAssertServes(t, ctx, f)
				return
			}
			c := hDial(t, f)
			// The write may already fail if pgferry closed first; what
			// matters is that no authentication request comes back.
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(hStartupFrame(t, ferrytest.User, "app"))
			frames := hReadUntilClosed(t, c)
			for _, fr := range frames {
				if fr.typ == 'R' {
					t.Fatalf("a refused client was offered authentication: %s", hDescribe(frames))
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
	ctx := hContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthFailureDelay = configs.Duration(50 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	for i := range 5 {
		_, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, "not-the-password"))
		if code, severity, ok := hPgCode(err); !ok || code != "28P01" || severity != "FATAL" {
			t.Fatalf("wrong password attempt %d: got %v, want FATAL 28P01", i+1, err)
		}
	}
	hAssertServes(t, ctx, f)
}

func TestTrustAuthSendsAuthenticationOkBeforeTheWelcome(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthType = "trust"
	f := ferrytest.Start(t, cfg)
	// Every client library waits for AuthenticationOk (or a password
	// request) after its startup packet; libpq and pgx both refuse a
	// ParameterStatus or ReadyForQuery that comes first.
	c := hDial(t, f)
	hWrite(t, c, hStartupFrame(t, ferrytest.User, "app"))
	frames, _, err := hReadFrames(c, 10*time.Second, func(fr hFrame) bool { return fr.typ == 'Z' || fr.typ == 'E' })
	if err != nil || len(frames) == 0 || frames[0].typ != 'R' || len(frames[0].body) != 4 || binary.BigEndian.Uint32(frames[0].body) != 0 {
		t.Fatalf("got %s (%v), want AuthenticationOk first", hDescribe(frames), err)
	}
	hAssertServes(t, ctx, f)
}

func TestPasswordsNeverReachPgferryLogs(t *testing.T) {
	t.Parallel()
	ctx := hContext(t)
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
	cfg, db := hConfig(t)
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
