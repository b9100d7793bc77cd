package entra

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// fakeClock is a manual clock for TokenSource.now and TokenSource.after.
// Timers fire when Advance moves the time past their deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch, func() bool { return false }
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, t := range c.timers {
			if t.ch == ch {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now // buffered, sent once
	}
	c.timers = kept
}

// useClock makes s run on c.
func useClock(s *TokenSource, c *fakeClock) {
	s.now = c.Now
	s.after = c.After
}

// fakeIssuer is the token-issuing half shared by the fakes: it numbers
// tokens, counts token requests, can fail or block, and issues tokens that
// expire ttl after its clock's now.
type fakeIssuer struct {
	now      func() time.Time
	ttl      time.Duration
	requests atomic.Int64
	serial   atomic.Int64
	status   atomic.Int64 // 0 or 200: succeed; anything else: fail with that status
	fixed    atomic.Pointer[string]
	gate     atomic.Pointer[chan struct{}] // if set, token requests wait for it to close
	errBody  string

	mu       sync.Mutex
	lastForm url.Values // last token POST form (authority fake)
}

func newIssuer(now func() time.Time, ttl time.Duration) *fakeIssuer {
	if now == nil {
		now = time.Now
	}
	return &fakeIssuer{now: now, ttl: ttl}
}

// next returns the token to issue and its expiry, or a failure status.
func (f *fakeIssuer) next(r *http.Request) (token string, expires time.Time, status int) {
	f.requests.Add(1)
	if g := f.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-r.Context().Done():
		}
	}
	if s := int(f.status.Load()); s != 0 && s != http.StatusOK {
		return "", time.Time{}, s
	}
	token = fmt.Sprintf("eyJhbGciOiJub25lIn0.token-%d.sig", f.serial.Add(1))
	if p := f.fixed.Load(); p != nil {
		token = *p
	}
	return token, f.now().Add(f.ttl), http.StatusOK
}

func (f *fakeIssuer) fail(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := f.errBody
	if body == "" {
		body = `{"error":"temporarily_unavailable","error_description":"AADSTS50000: fake outage"}`
	}
	fmt.Fprint(w, body)
}

// tokenName strips the fake JWT framing: "eyJ...token-3.sig" -> "token-3".
func tokenName(tok string) string {
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		return parts[1]
	}
	return tok
}

var miSerial atomic.Int64

// uniqueMIClientID returns a managed identity client ID not used before in
// this process: azidentity caches managed identity tokens process-wide by
// identity, so reusing an ID (even across -count runs) would skip the fake.
func uniqueMIClientID(t *testing.T) string {
	return fmt.Sprintf("mi-%s-%d", t.Name(), miSerial.Add(1))
}

// newFakeMI starts an App Service style managed identity endpoint and points
// IDENTITY_ENDPOINT/IDENTITY_HEADER at it (entra-id.md 4A).
func newFakeMI(t *testing.T, iss *fakeIssuer) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != "test-header" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		tok, exp, status := iss.next(r)
		if status != http.StatusOK {
			iss.fail(w, status)
			return
		}
		fmt.Fprintf(w, `{"access_token":%q,"expires_on":"%d","resource":%q,"token_type":"Bearer"}`,
			tok, exp.Unix(), r.URL.Query().Get("resource"))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("IDENTITY_ENDPOINT", srv.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "test-header")
	t.Setenv("IDENTITY_SERVER_THUMBPRINT", "")
	return srv
}

// newFakeAuthority starts a TLS Entra authority: openid-configuration plus a
// token endpoint (entra-id.md 4B).
func newFakeAuthority(t *testing.T, iss *fakeIssuer) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := strings.Split(r.URL.Path, "/")[1]
		switch {
		case strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
			_ = json.NewEncoder(w).Encode(map[string]string{
				"token_endpoint":         srv.URL + "/" + tenant + "/oauth2/v2.0/token",
				"authorization_endpoint": srv.URL + "/" + tenant + "/oauth2/v2.0/authorize",
				"issuer":                 srv.URL + "/" + tenant + "/v2.0",
			})
		case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
			if err := r.ParseForm(); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			iss.mu.Lock()
			iss.lastForm = r.PostForm
			iss.mu.Unlock()
			tok, exp, status := iss.next(r)
			if status != http.StatusOK {
				iss.fail(w, status)
				return
			}
			// MSAL computes the expiry as the real time plus expires_in;
			// measure from the real clock so that it lands on exp even when
			// the fake clock runs ahead.
			expiresIn := int(time.Until(exp).Round(time.Second).Seconds())
			fmt.Fprintf(w, `{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, tok, expiresIn)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeIssuer) form() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastForm
}

// noRetry makes a failing token request fail at once instead of after the
// SDK's ~8 s of retries.
var noRetry = &policy.RetryOptions{MaxRetries: -1}

// authorityConfig is a client_secret Config against srv.
func authorityConfig(srv *httptest.Server, secretEnv string) Config {
	return Config{
		Credential:               CredentialClientSecret,
		TenantID:                 "tenant",
		ClientID:                 "client",
		ClientSecretEnv:          secretEnv,
		AuthorityHost:            srv.URL,
		DisableInstanceDiscovery: true,
		Transport:                srv.Client(),
		Retry:                    noRetry,
		Database:                 "app",
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
