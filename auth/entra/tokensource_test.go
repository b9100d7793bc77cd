package entra

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// derefValue returns the struct behind a pointer as a reflect.Value, so that
// tests can print a copy of it without tripping vet's copylocks check.
func derefValue(v any) reflect.Value { return reflect.ValueOf(v).Elem() }

// newSecretSource returns a client_secret TokenSource against a fresh fake
// authority whose tokens live ttl on clk.
func newSecretSource(t *testing.T, clk *fakeClock, ttl time.Duration) (*TokenSource, *fakeIssuer) {
	t.Helper()
	t.Setenv("PGFERRY_TEST_ENTRA_SECRET", testSecret)
	var now func() time.Time
	if clk != nil {
		now = clk.Now
	}
	iss := newIssuer(now, ttl)
	srv := newFakeAuthority(t, iss)
	cfg := authorityConfig(srv, "PGFERRY_TEST_ENTRA_SECRET")
	cred, err := NewCredential(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, cfg)
	if clk != nil {
		useClock(s, clk)
	}
	t.Cleanup(s.Close)
	return s, iss
}

func password(t *testing.T, s *TokenSource) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := s.Password(ctx)
	if err != nil {
		t.Fatalf("Password: %v", err)
	}
	return tokenName(tok)
}

func TestPasswordBurstOnAColdSourceMakesOneRequest(t *testing.T) {
	s, iss := newSecretSource(t, nil, time.Hour)
	gate := make(chan struct{})
	iss.gate.Store(&gate)

	const callers = 500
	var (
		wg      sync.WaitGroup
		started sync.WaitGroup
		mu      sync.Mutex
		got     = map[string]int{}
		errs    []error
	)
	started.Add(callers)
	for range callers {
		wg.Go(func() {
			started.Done()
			tok, err := s.Password(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			got[tokenName(tok)]++
		})
	}
	started.Wait()
	eventually(t, "the first token request", func() bool { return iss.requests.Load() >= 1 })
	close(gate)
	wg.Wait()

	if len(errs) > 0 {
		t.Fatalf("%d callers failed, first: %v", len(errs), errs[0])
	}
	if got["token-1"] != callers {
		t.Errorf("tokens handed out = %v, want token-1 x %d", got, callers)
	}
	if n := iss.requests.Load(); n != 1 {
		t.Errorf("token endpoint saw %d requests, want 1", n)
	}
	if st := s.Stats(); st.Requests != 1 {
		t.Errorf("Stats.Requests = %d, want 1", st.Requests)
	}
}

func TestRefresherReplacesTheTokenBeforeItExpires(t *testing.T) {
	clk := newFakeClock()
	// 120 s tokens are below azidentity's 5-minute cache window, so every
	// GetToken reaches the fake; they refresh at 2/3 of their lifetime.
	s, iss := newSecretSource(t, clk, 120*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)

	eventually(t, "the first token", func() bool { return s.Stats().Refreshes == 1 })
	if got := password(t, s); got != "token-1" {
		t.Fatalf("Password = %q, want token-1", got)
	}
	st := s.Stats()
	if want := st.ExpiresOn.Add(-40 * time.Second); st.RefreshAt.Sub(want).Abs() > 2*time.Second {
		t.Errorf("RefreshAt = %s, want about 2/3 of the lifetime (%s)", st.RefreshAt, want)
	}

	clk.Advance(81 * time.Second)
	eventually(t, "the refresh", func() bool { return s.Stats().Refreshes == 2 })
	for range 3 {
		if got := password(t, s); got != "token-2" {
			t.Fatalf("Password after refresh = %q, want token-2", got)
		}
	}
	if n := iss.requests.Load(); n != 2 {
		t.Errorf("token endpoint saw %d requests, want 2", n)
	}

	clk.Advance(81 * time.Second)
	eventually(t, "the second refresh", func() bool { return s.Stats().Refreshes == 3 })
	if got := password(t, s); got != "token-3" {
		t.Fatalf("Password after second refresh = %q, want token-3", got)
	}
}

func TestPasswordServesTheCachedTokenDuringAnOutageAndRecovers(t *testing.T) {
	clk := newFakeClock()
	s, iss := newSecretSource(t, clk, 120*time.Second)
	// The outage body echoes a secret and a token, as a broken proxy might.
	iss.errBody = `{"error":"server_error","error_description":"AADSTS50000: boom ` + testSecret +
		` eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`

	if got := password(t, s); got != "token-1" {
		t.Fatalf("Password = %q, want token-1", got)
	}

	iss.status.Store(http.StatusInternalServerError)
	clk.Advance(90 * time.Second) // stale (refresh due at 80 s) but not expired
	for range 3 {
		if got := password(t, s); got != "token-1" {
			t.Fatalf("Password during outage = %q, want the cached token-1", got)
		}
	}
	st := s.Stats()
	if st.FailuresByReason[ReasonHTTPError] != 1 || st.ConsecutiveFailures != 1 {
		t.Errorf("Stats = %+v, want one http_error failure (later calls back off)", st)
	}
	if n := iss.requests.Load(); n != 2 {
		t.Errorf("token endpoint saw %d requests, want 2", n)
	}

	// Past expiry there is nothing to fall back on.
	clk.Advance(30 * time.Second)
	_, err := s.Password(context.Background())
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("Password after expiry: err = %v, want *TokenError", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, `could not obtain an Entra ID token for database "app": `) {
		t.Errorf("error = %q, want the database named", msg)
	}
	for _, want := range []string{"HTTP 500", "server_error", "AADSTS50000"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error = %q, want it to contain %q", msg, want)
		}
	}
	for _, secret := range []string{testSecret, "token-1", "eyJzdWIiOiJ4In0", "\n"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error = %q contains %q", msg, secret)
		}
	}
	if len(msg) > maxReasonLen+100 {
		t.Errorf("error is %d bytes long, want it bounded", len(msg))
	}

	// Recovery.
	iss.status.Store(http.StatusOK)
	clk.Advance(maxBackoff)
	if got := password(t, s); got != "token-2" {
		t.Fatalf("Password after recovery = %q, want token-2", got)
	}
	if st := s.Stats(); st.ConsecutiveFailures != 0 || st.Refreshes != 2 {
		t.Errorf("Stats after recovery = %+v, want 2 refreshes and no consecutive failures", st)
	}
}

func TestPasswordOnAColdSourceFailsWithTokenErrorUntilTheEndpointRecovers(t *testing.T) {
	iss := newIssuer(nil, time.Hour)
	iss.status.Store(http.StatusInternalServerError)
	newFakeMI(t, iss)
	cred, err := NewCredential(Config{
		Credential: CredentialManagedIdentity,
		ClientID:   uniqueMIClientID(t),
		Retry:      noRetry,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, Config{Database: "app"})
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = s.Password(ctx)
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *TokenError", err)
	}
	if te.Database != "app" || !strings.Contains(te.Error(), `database "app"`) {
		t.Errorf("error = %q, want database app", te.Error())
	}
	if !strings.Contains(te.Reason, "HTTP 500") || strings.Contains(te.Reason, "\n") {
		t.Errorf("Reason = %q, want one line with the HTTP status", te.Reason)
	}
	if st := s.Stats(); st.FailuresByReason[ReasonHTTPError] != 1 {
		t.Errorf("failures = %v, want one http_error", st.FailuresByReason)
	}

	// Within the backoff after the failure (0.5-1 s) callers fail fast;
	// after it the next call asks again.
	iss.status.Store(http.StatusOK)
	var tok string
	eventually(t, "a token once the endpoint recovered", func() bool {
		tok, err = s.Password(ctx)
		return err == nil
	})
	if tokenName(tok) != "token-1" {
		t.Errorf("Password = %q, want token-1", tokenName(tok))
	}
}

func TestPasswordHonoursTheCallersDeadline(t *testing.T) {
	s, iss := newSecretSource(t, nil, time.Hour)
	gate := make(chan struct{})
	iss.gate.Store(&gate)
	defer close(gate)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Password(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	var te *TokenError
	if !errors.As(err, &te) || !strings.Contains(te.Error(), `database "app"`) {
		t.Errorf("err = %v, want a *TokenError for app", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Password returned after %s, want about the caller's 50 ms deadline", d)
	}
}

func TestRefresherRetriesFailuresWithBackoff(t *testing.T) {
	clk := newFakeClock()
	s, iss := newSecretSource(t, clk, time.Hour)
	iss.status.Store(http.StatusServiceUnavailable)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)

	eventually(t, "the first failure", func() bool { return s.Stats().ConsecutiveFailures == 1 })
	clk.Advance(minBackoff)
	eventually(t, "the second failure", func() bool { return s.Stats().ConsecutiveFailures == 2 })
	if got := s.Stats().FailuresByReason[ReasonHTTPError]; got != 2 {
		t.Errorf("http_error failures = %d, want 2", got)
	}

	iss.status.Store(http.StatusOK)
	clk.Advance(maxBackoff)
	eventually(t, "recovery", func() bool { return s.Stats().Refreshes == 1 })
	if got := password(t, s); got != "token-1" {
		t.Errorf("Password = %q, want token-1", got)
	}
	if st := s.Stats(); st.ConsecutiveFailures != 0 {
		t.Errorf("ConsecutiveFailures = %d after recovery, want 0", st.ConsecutiveFailures)
	}
}

func TestSourceWaitsForTheSDKCacheWhenGivenTheSameTokenAgain(t *testing.T) {
	clk := newFakeClock()
	// An hour-long token: azidentity keeps it cached until 5 min before
	// expiry, later than our own refresh time of 6 min before.
	s, iss := newSecretSource(t, clk, time.Hour)
	if got := password(t, s); got != "token-1" {
		t.Fatalf("Password = %q, want token-1", got)
	}
	first := s.Stats()
	clk.Advance(first.RefreshAt.Sub(clk.Now()) + time.Second)
	if got := password(t, s); got != "token-1" {
		t.Fatalf("Password = %q, want token-1 from the SDK cache", got)
	}
	st := s.Stats()
	if st.Requests != 2 || st.Refreshes != 1 || iss.requests.Load() != 1 {
		t.Errorf("Stats = %+v, endpoint requests %d; want 2 GetToken calls, 1 refresh, 1 endpoint request",
			st, iss.requests.Load())
	}
	if want := st.ExpiresOn.Add(-sdkCacheWindow); st.RefreshAt.Before(want) {
		t.Errorf("RefreshAt = %s, want no earlier than the SDK's refresh point %s", st.RefreshAt, want)
	}
	// Until then Password does not ask again.
	password(t, s)
	if st := s.Stats(); st.Requests != 2 {
		t.Errorf("Requests = %d, want 2", st.Requests)
	}
}

func TestCloseStopsTheRefresherAndIsIdempotent(t *testing.T) {
	s, iss := newSecretSource(t, nil, time.Hour)
	gate := make(chan struct{})
	iss.gate.Store(&gate)
	defer close(gate)
	s.Start(context.Background())
	eventually(t, "the first request", func() bool { return iss.requests.Load() == 1 })

	done := make(chan struct{})
	go func() {
		s.Close() // cancels the blocked request
		s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	_, err := s.Password(context.Background())
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Password after Close: err = %v, want ErrClosed", err)
	}
	if st := s.Stats(); st.ConsecutiveFailures != 0 {
		t.Errorf("a request canceled by Close counted as a failure: %+v", st)
	}
	s.Start(context.Background()) // no-op after Close
}

func TestRefreshTime(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		lifetime  time.Duration
		refreshOn time.Duration // after now; 0 = unset
		want      time.Duration // after now
	}{
		{"short token at two thirds", 2 * time.Minute, 0, 80 * time.Second},
		{"nine minutes at two thirds", 9 * time.Minute, 0, 6 * time.Minute},
		{"thirty minutes five before", 30 * time.Minute, 0, 25 * time.Minute},
		{"hour ten percent before", time.Hour, 0, 54 * time.Minute},
		{"day at RefreshOn", 24 * time.Hour, 12 * time.Hour, 12 * time.Hour},
		{"late RefreshOn ignored", time.Hour, 58 * time.Minute, 54 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := azcore.AccessToken{ExpiresOn: now.Add(tc.lifetime)}
			if tc.refreshOn > 0 {
				tok.RefreshOn = now.Add(tc.refreshOn)
			}
			if got := refreshTime(now, tok).Sub(now); got != tc.want {
				t.Errorf("refresh after %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	for n := 1; n <= 40; n++ {
		want := min(minBackoff<<min(n-1, 7), maxBackoff)
		for range 50 {
			if d := backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func TestReasonNames(t *testing.T) {
	want := []string{"timeout", "http_error", "credential_unavailable", "other"}
	for i, w := range want {
		if got := ReasonName(Reason(i)); got != w {
			t.Errorf("ReasonName(%d) = %q, want %q", i, got, w)
		}
	}
	if got := ReasonName(NumReasons); got != "unknown" {
		t.Errorf("ReasonName(NumReasons) = %q", got)
	}
}

func TestSanitiseKeepsOneBoundedLineWithoutSecrets(t *testing.T) {
	long := strings.Repeat("x", 1000)
	err := errors.New("ManagedIdentityCredential authentication failed. " + long + " eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig\nsecond line " + testSecret)
	got := sanitise(err, testSecret)
	if strings.Contains(got, "\n") || strings.Contains(got, testSecret) || len(got) > maxReasonLen {
		t.Errorf("sanitise = %q (%d bytes)", got, len(got))
	}
	got = sanitise(errors.New("boom eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig "+testSecret), testSecret)
	if got != "boom [redacted] [redacted]" {
		t.Errorf("sanitise = %q", got)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Reason
	}{
		{"deadline", context.DeadlineExceeded, ReasonTimeout},
		{"wrapped deadline", &redactedError{msg: "x", err: context.DeadlineExceeded}, ReasonTimeout},
		{"plain", errors.New("boom"), ReasonOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Errorf("classify = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestASlowEndpointCountsAsATimeoutFailure(t *testing.T) {
	s, iss := newSecretSource(t, nil, time.Hour)
	s.refreshTimeout = 100 * time.Millisecond
	gate := make(chan struct{})
	iss.gate.Store(&gate)
	defer close(gate)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.Password(ctx)
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *TokenError", err)
	}
	if got := s.Stats().FailuresByReason; got[ReasonTimeout] != 1 {
		t.Errorf("failures = %v, want one timeout", got)
	}
}

func TestRejectedDropsTheCachedTokenAndABurstOfRejectionsCostsOneRequest(t *testing.T) {
	s, iss := newSecretSource(t, nil, 2*time.Minute) // short-lived: the SDK does not cache it
	first := password(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := s.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}

	const callers = 100
	var wg sync.WaitGroup
	got := make(chan string, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Rejected(old)
			tok, err := s.Password(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			got <- tokenName(tok)
		}()
	}
	wg.Wait()
	close(got)
	for name := range got {
		if name == first {
			t.Fatalf("a caller got the rejected token %s back", name)
		}
	}
	if n := iss.requests.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2 (the first and one replacement)", n)
	}
	if st := s.Stats(); st.Rejections != 1 {
		t.Fatalf("Rejections = %d, want 1", st.Rejections)
	}
	// A stale report about a token no longer cached changes nothing.
	s.Rejected(old)
	password(t, s)
	if n := iss.requests.Load(); n != 2 {
		t.Fatalf("a stale rejection caused a request (%d in all)", n)
	}
}

func TestWithNoTokenAFailedRequestFailsCallersFastUntilItsBackoffEnds(t *testing.T) {
	clk := newFakeClock()
	s, iss := newSecretSource(t, clk, 2*time.Minute)
	iss.status.Store(http.StatusInternalServerError)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Password(ctx); err == nil {
		t.Fatal("Password succeeded against a failing endpoint")
	}
	n := iss.requests.Load()
	for range 20 {
		var te *TokenError
		if _, err := s.Password(ctx); !errors.As(err, &te) {
			t.Fatalf("got %v, want a *TokenError", err)
		}
	}
	if got := iss.requests.Load(); got != n {
		t.Fatalf("callers within the backoff made %d more requests", got-n)
	}
	iss.status.Store(0)
	clk.Advance(2 * maxBackoff)
	if _, err := s.Password(ctx); err != nil {
		t.Fatalf("after the backoff: %v", err)
	}
}

func TestARejectedManagedIdentityTokenIsReplacedPastTheSDKCache(t *testing.T) {
	iss := newIssuer(nil, time.Hour) // long-lived: the SDK would serve it from its cache
	newFakeMI(t, iss)
	cfg := Config{Credential: CredentialManagedIdentity, ClientID: uniqueMIClientID(t), Retry: noRetry, Database: "app"}
	cred, err := NewCredential(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, cfg)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := s.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Rejected(old)
	tok, err := s.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok == old || iss.requests.Load() != 2 {
		t.Fatalf("after the rejection: same token %v, %d requests; want a new token from a second request", tok == old, iss.requests.Load())
	}
	// Without a rejection the SDK's cache still serves: no third request.
	s2 := NewTokenSource(cred, cfg)
	defer s2.Close()
	if _, err := s2.Password(ctx); err != nil || iss.requests.Load() != 2 {
		t.Fatalf("a fresh source bypassed the SDK cache: %v, %d requests", err, iss.requests.Load())
	}
}
