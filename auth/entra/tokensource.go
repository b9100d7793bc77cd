package entra

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

const (
	// shortLifetime: tokens living less than this refresh at 2/3 of their
	// lifetime instead of max(10%, 5 min) before expiry, which would be at
	// or before the moment they were issued.
	shortLifetime = 10 * time.Minute
	// minRefreshMargin is the least time before expiry a longer-lived token
	// is refreshed.
	minRefreshMargin = 5 * time.Minute
	// sdkCacheWindow: azidentity's confidential credentials and MSAL serve a
	// cached token until it is within 5 minutes of expiry (or past RefreshOn).
	sdkCacheWindow = 5 * time.Minute
	// sameTokenRetryInterval is the least wait before asking again after the
	// SDK answered from its cache with the token we already hold.
	sameTokenRetryInterval = 30 * time.Second
	// expiryGuard: a cached token is handed out until this long before it
	// expires. The server checks it once during a login that takes
	// milliseconds; the guard absorbs clock skew.
	expiryGuard = 10 * time.Second
	// Retry backoff after failed token requests: minBackoff doubling up to
	// maxBackoff, each delay randomised down by up to half.
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// TokenSource hands out Entra ID access tokens as server login passwords. It
// caches one token for its (credential, scope) pair, makes at most one token
// request at a time however many logins need a token (callers share the
// request under way), refreshes ahead of expiry in the background after Start,
// and keeps serving a token that is still valid while Entra is unreachable.
//
// A TokenSource is safe for concurrent use. It never prints the token: String,
// GoString, errors and Stats leave it out. Call Close to stop its goroutines.
type TokenSource struct {
	cred  azcore.TokenCredential
	scope string
	// bypassOnReject: after a rejection, ask the credential past the SDK's
	// own cache (managed identity only, see Rejected).
	bypassOnReject bool
	database       string
	refreshTimeout time.Duration
	now            func() time.Time
	// after starts a timer; tests replace it to drive a fake clock.
	after func(time.Duration) (<-chan time.Time, func() bool)

	// base is canceled by Close and is the parent of every token request, so
	// Close does not wait out a slow endpoint.
	base      context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the refresher and the in-flight request goroutine
	closeOnce sync.Once

	// Cumulative counters for Stats.
	refreshes  atomic.Uint64
	requests   atomic.Uint64
	rejections atomic.Uint64
	failures   [NumReasons]atomic.Uint64

	// mu guards the fields inside it. Nothing blocks while it is held: token
	// requests run in their own goroutine and report back under the lock.
	mu struct {
		sync.Mutex
		// tok is the cached token, nil until the first success. It is a
		// pointer so that printing a copy of TokenSource shows an address,
		// not the token.
		tok *cachedToken
		// inflight is the token request under way, nil if none.
		inflight *call
		// failures counts consecutive failed requests; retryAt is when the
		// backoff after the last failure ends.
		failures int
		retryAt  time.Time
		// lastErr is the error of the last failed request, cleared by a
		// success; while no token is usable it is returned at once until
		// retryAt, so a flood of logins does not hammer a failing endpoint.
		lastErr error
		// running is true while the refresher goroutine is alive.
		running bool
		// closed is set by Close; no goroutine is started afterwards.
		closed bool
		// bypass makes the next request skip the SDK's cache; set by
		// Rejected when bypassOnReject.
		bypass bool
	}
}

type cachedToken struct {
	token     string
	expiresOn time.Time
	refreshAt time.Time
}

// call is one token request shared by every caller that needs it.
type call struct {
	done  chan struct{} // closed once token or err is set
	token string
	err   error // a *TokenError
}

// NewTokenSource returns a TokenSource for cred (which must not be nil),
// using cfg.Scope, cfg.Database, cfg.RefreshTimeout and cfg.Now; the other
// fields of cfg only matter to NewCredential. It makes no request until the
// first Password call or Start.
func NewTokenSource(cred azcore.TokenCredential, cfg Config) *TokenSource {
	s := &TokenSource{
		cred:           cred,
		scope:          cfg.Scope,
		database:       cfg.Database,
		refreshTimeout: cfg.RefreshTimeout,
		bypassOnReject: cfg.Credential == CredentialManagedIdentity,
		now:            cfg.Now,
		after: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}
	if s.scope == "" {
		s.scope = DefaultScope
	}
	if s.refreshTimeout <= 0 {
		s.refreshTimeout = DefaultRefreshTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s
}

// Password returns an access token to use as the password of a new server
// login. It satisfies the pool's PasswordSource interface.
//
// It returns the cached token while that is fresh (before its refresh time).
// Otherwise it waits for a token request, shared with every concurrent caller,
// up to ctx's deadline. If the request fails, or ctx ends first, but the cached
// token has not expired yet, it returns the cached token: a transient outage of
// the identity endpoint must not break logins. When the background refresher
// is running, or a request failed moments ago, a stale but unexpired token is
// returned at once without waiting on Entra. With no usable token, a call
// within the backoff after a failed request returns that request's error at
// once instead of asking again.
//
// Errors are *TokenError. A request outlives a caller that gives up: it is
// bounded by Config.RefreshTimeout and by Close.
func (s *TokenSource) Password(ctx context.Context) (string, error) {
	now := s.now()
	s.mu.Lock()
	tok := s.mu.tok
	if tok != nil && now.Before(tok.refreshAt) {
		s.mu.Unlock()
		return tok.token, nil
	}
	usable := tok != nil && now.Before(tok.expiresOn.Add(-expiryGuard))
	if usable && (s.mu.running || s.mu.closed || now.Before(s.mu.retryAt)) {
		s.mu.Unlock()
		return tok.token, nil
	}
	if !usable && s.mu.lastErr != nil && s.mu.inflight == nil && now.Before(s.mu.retryAt) {
		err := s.mu.lastErr
		s.mu.Unlock()
		return "", err
	}
	c := s.startLocked()
	s.mu.Unlock()

	select {
	case <-c.done:
		if c.err == nil {
			return c.token, nil
		}
		if usable {
			return tok.token, nil
		}
		return "", c.err
	case <-ctx.Done():
		if usable {
			return tok.token, nil
		}
		return "", &TokenError{
			Database: s.database,
			Reason:   "gave up waiting for the token endpoint: " + ctx.Err().Error(),
			Err:      ctx.Err(),
		}
	}
}

// startLocked returns the token request under way, starting one if there is
// none. s.mu must be held.
func (s *TokenSource) startLocked() *call {
	if c := s.mu.inflight; c != nil {
		return c
	}
	c := &call{done: make(chan struct{})}
	if s.mu.closed {
		c.err = &TokenError{Database: s.database, Reason: ErrClosed.Error(), Err: ErrClosed}
		close(c.done)
		return c
	}
	s.mu.inflight = c
	s.wg.Add(1) // under mu with closed false, so never concurrent with Close's Wait
	go s.request(c, s.mu.bypass)
	s.mu.bypass = false
	return c
}

// bypassClaims is the claims request passed to skip the SDK's token cache.
// For managed identity MSAL only checks that it is not empty ("ignore cached
// access tokens when given claims") and does not send it to the endpoint.
const bypassClaims = `{"access_token":{}}`

// request makes one GetToken call, updates the cache and completes c. With
// bypass it asks past the SDK's cache.
func (s *TokenSource) request(c *call, bypass bool) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.base, s.refreshTimeout)
	defer cancel()

	s.requests.Add(1)
	opts := policy.TokenRequestOptions{Scopes: []string{s.scope}}
	if bypass {
		opts.Claims = bypassClaims
	}
	tok, err := s.cred.GetToken(ctx, opts)
	now := s.now()
	if err == nil {
		switch {
		case tok.Token == "":
			err = errors.New("the token endpoint returned an empty token")
		case !tok.ExpiresOn.After(now.Add(expiryGuard)):
			err = fmt.Errorf("the token endpoint returned a token expiring at %s", tok.ExpiresOn.UTC().Format(time.RFC3339))
		}
	}

	s.mu.Lock()
	if err != nil {
		var current string
		if s.mu.tok != nil {
			current = s.mu.tok.token
		}
		c.err = &TokenError{Database: s.database, Reason: sanitise(err, current, tok.Token), Err: err}
		if s.base.Err() == nil { // failures caused by Close are not failures of Entra
			reason := classify(err)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// azidentity does not always wrap the context's error.
				reason = ReasonTimeout
			}
			s.failures[reason].Add(1)
			s.mu.failures++
			s.mu.retryAt = now.Add(backoff(s.mu.failures))
			s.mu.lastErr = c.err
		}
	} else {
		prev := s.mu.tok
		next := &cachedToken{token: tok.Token, expiresOn: tok.ExpiresOn, refreshAt: refreshTime(now, tok)}
		if prev != nil && prev.token == tok.Token && prev.expiresOn.Equal(tok.ExpiresOn) {
			// The SDK answered from its own cache, which it keeps until
			// sdkCacheWindow before expiry or RefreshOn: ask again then.
			at := tok.ExpiresOn.Add(-sdkCacheWindow)
			if !tok.RefreshOn.IsZero() && tok.RefreshOn.Before(at) {
				at = tok.RefreshOn
			}
			next.refreshAt = laterOf(at, now.Add(sameTokenRetryInterval))
		} else {
			s.refreshes.Add(1)
		}
		s.mu.tok = next
		s.mu.failures = 0
		s.mu.retryAt = time.Time{}
		s.mu.lastErr = nil
		c.token = tok.Token
	}
	s.mu.inflight = nil
	s.mu.Unlock()
	close(c.done)
}

// Rejected reports that a server refused a login made with token (SQLSTATE
// 28P01 or 28000): the token may have been revoked, or the role's expected
// token changed, before its expiry. If token is the cached one it is
// dropped, and the backoff after earlier failures is forgotten, so the next
// Password call waits for a fresh token. Callers reporting the same token
// at once drop it once and then share one request, so a burst of refused
// logins costs one token request. A token other than the cached one (the
// cache has moved on already) is ignored. It satisfies the pool's
// PasswordRejecter interface.
//
// The Azure SDK keeps its own cache and would hand the refused token back
// while it has more than 5 minutes left. For managed identity the next
// request skips that cache (MSAL does so when claims are requested, without
// sending them to the endpoint); other credential types would send the
// claims to Entra, so they get whatever the SDK returns.
func (s *TokenSource) Rejected(token string) {
	s.mu.Lock()
	if t := s.mu.tok; t != nil && t.token == token {
		s.mu.tok = nil
		s.mu.bypass = s.bypassOnReject
		s.mu.retryAt = time.Time{}
		s.mu.lastErr = nil
		s.rejections.Add(1)
	}
	s.mu.Unlock()
}

// refreshTime is when a token received at now should be replaced: at
// max(10% of its lifetime, 5 min) before expiry, or at 2/3 of its lifetime if
// it lives less than 10 min; earlier if the issuer set RefreshOn.
func refreshTime(now time.Time, tok azcore.AccessToken) time.Time {
	lifetime := tok.ExpiresOn.Sub(now)
	var at time.Time
	if lifetime < shortLifetime {
		at = now.Add(lifetime * 2 / 3)
	} else {
		at = tok.ExpiresOn.Add(-max(lifetime/10, minRefreshMargin))
	}
	if !tok.RefreshOn.IsZero() && tok.RefreshOn.After(now) && tok.RefreshOn.Before(at) {
		at = tok.RefreshOn
	}
	return at
}

// backoff returns the delay after the n-th consecutive failure (n >= 1).
func backoff(n int) time.Duration {
	d := maxBackoff
	if n <= 7 { // 1s << 6 = 64s already exceeds maxBackoff
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Start runs the background refresher until ctx is done or Close is called.
// It fetches a token at once if none is cached, then refreshes at each
// token's refresh time (see refreshTime), retrying failures with exponential
// backoff. Start does not block; calling it while the refresher runs, or after
// Close, does nothing.
func (s *TokenSource) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed || s.mu.running {
		return
	}
	s.mu.running = true
	s.wg.Add(1)
	go s.refresher(ctx)
}

func (s *TokenSource) refresher(ctx context.Context) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.mu.running = false
		s.mu.Unlock()
	}()
	for {
		// wake is when the next request is due; zero means now.
		var wake time.Time
		s.mu.Lock()
		switch {
		case s.mu.failures > 0:
			wake = s.mu.retryAt
		case s.mu.tok != nil:
			wake = s.mu.tok.refreshAt
		}
		s.mu.Unlock()

		if d := wake.Sub(s.now()); !wake.IsZero() && d > 0 {
			timer, stop := s.after(d)
			select {
			case <-ctx.Done():
				stop()
				return
			case <-s.base.Done():
				stop()
				return
			case <-timer:
			}
			continue // a Password caller may have refreshed meanwhile
		}

		s.mu.Lock()
		c := s.startLocked()
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-s.base.Done():
			return
		case <-c.done:
		}
	}
}

// Close stops the refresher and cancels any token request under way, and
// returns once their goroutines have exited. It is idempotent. After Close,
// Password still returns a cached token that has not expired, and a
// *TokenError wrapping ErrClosed otherwise.
func (s *TokenSource) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.mu.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
}

// Stats is a snapshot of a TokenSource for metrics. It contains no secret.
type Stats struct {
	// ExpiresOn is the expiry of the cached token; zero if there is none
	// (pgferry_auth_entra_token_expiry_timestamp_seconds).
	ExpiresOn time.Time
	// RefreshAt is when the cached token is due to be replaced.
	RefreshAt time.Time
	// Refreshes counts new tokens received, including the first
	// (pgferry_auth_entra_token_refreshes_total).
	Refreshes uint64
	// Requests counts GetToken calls made.
	Requests uint64
	// Rejections counts cached tokens dropped because a server refused them
	// (see Rejected).
	Rejections uint64
	// FailuresByReason counts failed GetToken calls, indexed by Reason
	// (pgferry_auth_entra_token_failures_total{reason}).
	FailuresByReason [NumReasons]uint64
	// ConsecutiveFailures is the number of failed requests since the last
	// success.
	ConsecutiveFailures int
}

// Stats returns a snapshot of the counters and the cached token's times.
func (s *TokenSource) Stats() Stats {
	st := Stats{Refreshes: s.refreshes.Load(), Requests: s.requests.Load(), Rejections: s.rejections.Load()}
	for i := range st.FailuresByReason {
		st.FailuresByReason[i] = s.failures[i].Load()
	}
	s.mu.Lock()
	if t := s.mu.tok; t != nil {
		st.ExpiresOn, st.RefreshAt = t.expiresOn, t.refreshAt
	}
	st.ConsecutiveFailures = s.mu.failures
	s.mu.Unlock()
	return st
}

// String describes the source without its token.
func (s *TokenSource) String() string {
	st := s.Stats()
	exp := "none"
	if !st.ExpiresOn.IsZero() {
		exp = st.ExpiresOn.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("entra.TokenSource(database=%q scope=%q expires=%s refreshes=%d)", s.database, s.scope, exp, st.Refreshes)
}

// GoString is String, so that %#v does not print the fields.
func (s *TokenSource) GoString() string { return s.String() }
