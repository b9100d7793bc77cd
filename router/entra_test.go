package router_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router"
)

// fakeIdentity is an App Service managed-identity endpoint on loopback that
// the real azidentity ManagedIdentityCredential talks to.
type fakeIdentity struct {
	srv      *httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	token    string
	failing  bool
}

func newFakeIdentity(t *testing.T, token string) *fakeIdentity {
	f := &fakeIdentity{token: token}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if r.Header.Get("X-IDENTITY-HEADER") != "test-header" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		tok, failing := f.token, f.failing
		f.mu.Unlock()
		if failing {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		// Short-lived tokens: azidentity serves from its cache only tokens
		// with more than 5 minutes left, so every fetch reaches the fake.
		fmt.Fprintf(w, `{"access_token":%q,"expires_on":"%d","resource":%q,"token_type":"Bearer"}`,
			tok, time.Now().Add(2*time.Minute).Unix(), r.URL.Query().Get("resource"))
	}))
	t.Cleanup(f.srv.Close)
	t.Setenv("IDENTITY_ENDPOINT", f.srv.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "test-header")
	return f
}

func (f *fakeIdentity) set(token string, failing bool) {
	f.mu.Lock()
	f.token, f.failing = token, failing
	f.mu.Unlock()
}

const entraRole = "app@contoso.onmicrosoft.com"

// entraFerry starts pgferry whose "app" database logs in as entraRole with
// tokens from the fake endpoint, over TLS, to a server that accepts only
// the token (cleartext password over hostssl, as Azure's server asks).
func entraFerry(t *testing.T, fake *fakeIdentity, poolSize int, clock func() time.Time, mods ...func(*configs.Config)) (*ferrytest.Ferry, *entra.TokenSource) {
	t.Helper()
	ctx := context.Background()
	if err := cluster.AddHBA(fmt.Sprintf(`hostssl all %q 127.0.0.1/32 password`, entraRole), fmt.Sprintf(`host all %q 127.0.0.1/32 reject`, entraRole)); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateRole(ctx, entraRole, fake.token); err != nil {
		if err := cluster.Exec(ctx, fmt.Sprintf(`alter role %q password '%s'`, entraRole, fake.token)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.Exec(ctx, fmt.Sprintf(`grant all on database app to %q`, entraRole)); err != nil {
		t.Fatal(err)
	}
	cfg := ferrytest.Config(t, cluster)
	db := cfg.Databases["app"]
	db.User = entraRole
	db.Password = ""
	db.Auth = "entra"
	db.SSLMode = "verify-full"
	db.SSLRootCert = cluster.CAFile
	db.Host = "localhost"
	db.PoolSize = poolSize
	cfg.Databases["app"] = db
	for _, mod := range mods {
		mod(cfg)
	}
	ec := entra.Config{
		Credential:     "managed_identity",
		ClientID:       fmt.Sprintf("test-%d", time.Now().UnixNano()), // the MI cache is process-wide
		Database:       "app",
		Retry:          &policy.RetryOptions{MaxRetries: -1},
		RefreshTimeout: 20 * time.Second,
		Now:            clock,
	}
	cred, err := entra.NewCredential(ec)
	if err != nil {
		t.Fatal(err)
	}
	ts := entra.NewTokenSource(cred, ec)
	t.Cleanup(ts.Close)
	f := ferrytest.Start(t, cfg, func(o *router.Options) {
		o.PasswordSource = func(string, configs.Database) (pool.PasswordSource, error) { return ts, nil }
	})
	return f, ts
}

func TestEntraTokensLogServersInAcrossRotationAndABurstCostsOneTokenRequest(t *testing.T) {
	fake := newFakeIdentity(t, "token-1-"+strings.Repeat("a", 2000))
	var skew atomic.Int64 // the token source's clock runs ahead by this much
	f, _ := entraFerry(t, fake, 5, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	ctx := testContext(t)

	// A cold burst: 500 clients at once, one token request.
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			var user string
			if err := c.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != entraRole {
				errs <- fmt.Errorf("current_user %q: %v", user, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := fake.requests.Load(); n != 1 {
		t.Fatalf("the burst made %d token requests, want 1", n)
	}

	// An old server connection stays in use inside a transaction while the
	// token rotates; new logins use the new token.
	old := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fake.set("token-2-"+strings.Repeat("b", 2000), false)
	if err := cluster.Exec(ctx, fmt.Sprintf(`alter role %q password '%s'`, entraRole, "token-2-"+strings.Repeat("b", 2000))); err != nil {
		t.Fatal(err)
	}
	// Time passes: the cached token is due for refresh (2-minute tokens are
	// refreshed at two thirds of their life).
	skew.Store(int64(90 * time.Second))
	f.Server.Reconnect("")
	// The old token is refused by the server now; pgferry fetches the new one.
	ferrytest.Eventually(t, 30*time.Second, "a login with the rotated token", func() (bool, error) {
		c, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			return false, err
		}
		defer c.Close(context.Background())
		var one int
		err = c.QueryRow(ctx, "select 1").Scan(&one)
		return err == nil, err
	})
	var n int
	if err := tx.QueryRow(ctx, "select 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("the old server connection stopped serving: %v", err)
	}
	tx.Commit(ctx)
	if fake.requests.Load() < 2 {
		t.Fatalf("no new token was requested after rotation")
	}
}

func TestClientsGetAClearErrorWhenNoEntraTokenCanBeObtained(t *testing.T) {
	fake := newFakeIdentity(t, "token-x")
	fake.set("token-x", true)
	f, _ := entraFerry(t, fake, 2, nil)
	ctx := testContext(t)
	_, err := pgx.Connect(ctx, f.AppDSN())
	pe := expectPgError(t, err, "08001")
	if !strings.Contains(pe.Message, `could not obtain an Entra ID token for database "app"`) {
		t.Fatalf("got %v, want FATAL 08001 naming the database", err)
	}
	if strings.Contains(f.Logs(), "token-x") || strings.Contains(pe.Message, "token-x") {
		t.Fatal("the token leaked into an error or a log line")
	}
	// Recovery when the identity endpoint comes back.
	fake.set("token-x", false)
	ferrytest.Eventually(t, 30*time.Second, "a login once the identity endpoint is back", func() (bool, error) {
		c, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			return false, err
		}
		c.Close(context.Background())
		return true, nil
	})
}

func TestAServerRefusingTheCachedTokenMakesPgferryFetchANewOneOnceForABurst(t *testing.T) {
	fake := newFakeIdentity(t, "token-r1-"+strings.Repeat("a", 1500))
	const size = 8
	// A long server_login_retry: token failures must not be pinned by it.
	f, ts := entraFerry(t, fake, size, nil, func(c *configs.Config) { c.ServerLoginRetry = configs.Duration(time.Minute) })
	ctx := testContext(t)
	assertServes(t, ctx, f)
	if n := fake.requests.Load(); n != 1 {
		t.Fatalf("%d token requests for the first login, want 1", n)
	}

	// The role's token changes before pgferry's cached one expires (or is
	// due for refresh): the server refuses the cached token.
	token2 := "token-r2-" + strings.Repeat("b", 1500)
	fake.set(token2, false)
	if err := cluster.Exec(ctx, fmt.Sprintf(`alter role %q password '%s'`, entraRole, token2)); err != nil {
		t.Fatal(err)
	}
	f.Server.Reconnect("")
	waitNoBusyBackendsOf(t, ctx, entraRole)

	// A burst of clients each holding a server in a transaction forces
	// size concurrent server logins, all refused with the old token.
	var wg sync.WaitGroup
	errs := make(chan error, 4*size)
	release := make(chan struct{})
	for i := 0; i < 4*size; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			tx, err := c.Begin(ctx)
			if err != nil {
				errs <- err
				return
			}
			var user string
			if err := tx.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != entraRole {
				errs <- fmt.Errorf("current_user %q: %v", user, err)
			}
			<-release
			tx.Commit(ctx)
		}()
	}
	ferrytest.Eventually(t, 30*time.Second, "all servers logged in with the new token", func() (bool, error) {
		n, err := queryInt(ctx, fmt.Sprintf(`select count(*) from pg_stat_activity where usename = '%s'`, entraRole))
		return n == size || len(errs) > 0, err
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := fake.requests.Load(); n != 2 {
		t.Fatalf("%d token requests in all, want 2: one more for the whole burst of refused logins", n)
	}
	if st := ts.Stats(); st.Rejections != 1 {
		t.Fatalf("Rejections = %d, want 1", st.Rejections)
	}

	// Now the token changes again and the identity endpoint fails: the
	// refused token is dropped, no new one can be had, and clients are told
	// so (08001 naming Entra), not the server's stale-password error.
	fake.set("token-r3", true)
	if err := cluster.Exec(ctx, fmt.Sprintf(`alter role %q password 'token-r3'`, entraRole)); err != nil {
		t.Fatal(err)
	}
	f.Server.Reconnect("")
	waitNoBusyBackendsOf(t, ctx, entraRole)
	// The session logs in on the pool's cached welcome; its first query
	// needs a server login.
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	_, err := c.Exec(ctx, "select 1")
	pe := expectPgError(t, err, "08001")
	if !strings.Contains(pe.Message, `could not obtain an Entra ID token for database "app"`) {
		t.Fatalf("got %q, want the Entra token error", pe.Message)
	}
	// The failure is not pinned by server_login_retry: once the endpoint
	// serves the new token, logins work again.
	fake.set("token-r3", false)
	// (The token source's own backoff after one failure is at most 1 s.)
	ferrytest.Eventually(t, 10*time.Second, "a query once the endpoint is back", func() (bool, error) {
		c, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			return false, err
		}
		defer c.Close(context.Background())
		_, err = c.Exec(ctx, "select 1")
		return err == nil, err
	})
	if strings.Contains(f.Logs(), "token-r") {
		t.Fatal("a token leaked into the log")
	}
}

// waitNoBusyBackendsOf waits until role has no server connection left.
func waitNoBusyBackendsOf(t *testing.T, ctx context.Context, role string) {
	t.Helper()
	ferrytest.Eventually(t, 30*time.Second, "old server connections closed", func() (bool, error) {
		n, err := queryInt(ctx, fmt.Sprintf(`select count(*) from pg_stat_activity where usename = '%s'`, role))
		return n == 0, err
	})
}

// An identity endpoint that accepts requests and never answers: a client
// whose login needs a token is told, once server_connect_timeout ends the
// dial's wait, that no token could be had (08001 naming Entra). The
// server was reachable, so this is no outage to hold clients through
// (outage_hold_timeout): on the old code the pool held the client and
// retried the dial until the token request itself timed out (20 s here,
// entra's RefreshTimeout; 30 s by default).
func TestAHangingIdentityEndpointFailsLoginsWithTheEntraErrorAtTheConnectTimeout(t *testing.T) {
	fake := newFakeIdentity(t, "token-h")
	hang := make(chan struct{})
	defer close(hang) // before the fake's Close, which waits for its handlers
	fake.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake.requests.Add(1)
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	f, _ := entraFerry(t, fake, 2, nil, func(c *configs.Config) {
		c.ServerConnectTimeout = configs.Duration(time.Second)
		c.OutageHoldTimeout = configs.Duration(time.Minute)
		c.QueryWaitTimeout = configs.Duration(time.Minute)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, f.AppDSN())
	pe := expectPgError(t, err, "08001")
	if !strings.Contains(pe.Message, `could not obtain an Entra ID token for database "app"`) {
		t.Fatalf("got %q, want the Entra token error", pe.Message)
	}
	for _, p := range f.Server.Snapshot().Pools {
		if p.Stat.Retries != 0 {
			t.Fatalf("the pool retried its dial %d times, as for a server outage", p.Stat.Retries)
		}
	}
}
