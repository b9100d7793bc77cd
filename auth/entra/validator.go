package entra

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults of ValidatorConfig.
const (
	// DefaultAuthorityHost is the public cloud's Entra authority; Azure
	// Government uses https://login.microsoftonline.us, Azure China
	// https://login.chinacloudapi.cn.
	DefaultAuthorityHost = "https://login.microsoftonline.com"
	// DefaultV1IssuerHost is the host of v1 access token issuers
	// (https://sts.windows.net/{tenant}/) in the public cloud; Azure
	// Government uses https://sts.usgovcloudapi.net (tokens from
	// login.microsoftonline.us), Azure China https://sts.chinacloudapi.cn.
	DefaultV1IssuerHost = "https://sts.windows.net"
	// DefaultAudience is the audience of tokens for Azure Database for
	// PostgreSQL (the scope DefaultScope without "/.default").
	DefaultAudience = "https://ossrdbms-aad.database.windows.net"
	// DefaultClockSkew is the leeway on exp and nbf.
	DefaultClockSkew = time.Minute
	// DefaultKeyRefreshInterval is the least time between two fetches of a
	// tenant's signing keys prompted by an unknown key id. Entra publishes
	// new keys well before signing with them, so a token signed with a key
	// unknown after a refresh minutes ago is forged or broken.
	DefaultKeyRefreshInterval = 5 * time.Minute
	// DefaultFetchTimeout bounds one discovery or key set request.
	DefaultFetchTimeout = 10 * time.Second
	// DefaultMaxCachedTokens bounds the cache of validated tokens.
	DefaultMaxCachedTokens = 10000

	// failedFetchRetry is the least time between fetches after a failed
	// one (network trouble, not an unknown key id).
	failedFetchRetry = 10 * time.Second
	// maxTokenLen bounds a token accepted for checking; Entra tokens run to
	// a few KB (docs/entra-id.md), PostgreSQL's own limit is 65535.
	maxTokenLen = 16 << 10
	// maxDocument bounds a discovery document or key set read.
	maxDocument = 1 << 20
	// minRSABits refuses toy keys published by mistake.
	minRSABits = 2048
)

// ValidatorConfig configures a Validator. Tenants is required; zero values
// of the rest take the Default constants.
type ValidatorConfig struct {
	// Tenants are the directory (tenant) ids, GUIDs, whose tokens are
	// accepted. A token's issuer must be one of
	// {AuthorityHost}/{tenant}/v2.0 and {V1IssuerHost}/{tenant}/.
	Tenants []string
	// AuthorityHost serves each tenant's OpenID discovery document at
	// {AuthorityHost}/{tenant}/v2.0/.well-known/openid-configuration. It
	// must be an https URL.
	AuthorityHost string
	// V1IssuerHost is the host part of v1 token issuers.
	V1IssuerHost string
	// Audiences lists the accepted aud values.
	Audiences []string
	// ClockSkew is the leeway on exp and nbf.
	ClockSkew time.Duration
	// KeyRefreshInterval is the least time between fetches of a tenant's
	// key set prompted by unknown key ids.
	KeyRefreshInterval time.Duration
	// FetchTimeout bounds one HTTP request for keys.
	FetchTimeout time.Duration
	// MaxCachedTokens bounds the validated-token cache.
	MaxCachedTokens int
	// HTTPClient fetches discovery documents and key sets; nil uses a
	// client that requires TLS 1.2 or later. Only https URLs are fetched.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Identity is who a validated token speaks for.
type Identity struct {
	// Tenant is the token's tenant id.
	Tenant string
	// ObjectID is the oid claim: the user's, service principal's or
	// managed identity's object id.
	ObjectID string
	// App is true for app-only tokens (service principals and managed
	// identities: idtyp "app", or no delegated scope and no user name).
	App bool
	// UPN is the user's name (upn, else preferred_username); empty for
	// app-only tokens.
	UPN string
	// AppID is the appid (v1) or azp (v2) claim: for app-only tokens the
	// identity itself, for user tokens the client application used.
	AppID string
	// Groups are the group object ids of the groups claim.
	Groups []string
	// ExpiresAt is the token's exp.
	ExpiresAt time.Time
}

// String describes the identity for logs; it holds no secret.
func (id *Identity) String() string {
	if id.App {
		return fmt.Sprintf("app %s (object %s, tenant %s)", id.AppID, id.ObjectID, id.Tenant)
	}
	return fmt.Sprintf("user %s (object %s, tenant %s)", id.UPN, id.ObjectID, id.Tenant)
}

// RejectedError says why a token was not accepted. Its message is for
// logs, never for the client (which is told only that authentication
// failed), and never contains the token.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "entra token rejected: " + e.Reason }

func rejected(format string, args ...any) error {
	return &RejectedError{Reason: fmt.Sprintf(format, args...)}
}

// ValidatorStats are a Validator's cumulative counters.
type ValidatorStats struct {
	// SignatureChecks counts tokens whose signature was checked.
	SignatureChecks uint64
	// CacheHits counts tokens accepted from the cache.
	CacheHits uint64
	// SharedChecks counts validations that waited for the same token's
	// check under way instead of making their own.
	SharedChecks uint64
	// Rejected counts tokens refused.
	Rejected uint64
	// DiscoveryFetches and KeyFetches count HTTP requests made for the
	// discovery documents and the key sets, failed ones included.
	DiscoveryFetches, KeyFetches uint64
}

// Validator checks Entra ID access tokens that clients send as passwords:
// RS256 signature against the tenant's published keys, issuer, audience,
// exp and nbf. Accepted tokens are cached by their SHA-256 until they
// expire, and concurrent checks of one token share one signature check, so
// a burst of logins with one token costs one check. Key sets are fetched on
// first use and again when a token names an unknown key id, at most once
// per KeyRefreshInterval per tenant, so forged key ids cannot make pgferry
// hammer the endpoint.
//
// A Validator is safe for concurrent use and starts no goroutines: fetches
// run in the caller's goroutine, bounded by FetchTimeout.
type Validator struct {
	cfg      ValidatorConfig
	client   *http.Client
	issuers  map[string]string // issuer -> tenant
	keySets  map[string]*keySet
	audience jwt.Audience

	sigChecks, hits, shared, refused, discoveries, keyFetches atomic.Uint64

	// mu guards the cache and the checks under way. Nothing blocks while it
	// is held.
	mu struct {
		sync.Mutex
		cache    map[[32]byte]*Identity
		inflight map[[32]byte]*check
	}
}

type check struct {
	done chan struct{} // closed when id or err is set
	id   *Identity
	err  error
}

// NewValidator returns a Validator for cfg. It makes no request until the
// first token arrives.
func NewValidator(cfg ValidatorConfig) (*Validator, error) {
	if len(cfg.Tenants) == 0 {
		return nil, errors.New("no tenant configured")
	}
	if cfg.AuthorityHost == "" {
		cfg.AuthorityHost = DefaultAuthorityHost
	}
	if cfg.V1IssuerHost == "" {
		cfg.V1IssuerHost = DefaultV1IssuerHost
	}
	cfg.AuthorityHost = strings.TrimRight(cfg.AuthorityHost, "/")
	cfg.V1IssuerHost = strings.TrimRight(cfg.V1IssuerHost, "/")
	for _, h := range []string{cfg.AuthorityHost, cfg.V1IssuerHost} {
		if u, err := url.Parse(h); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%q is not an https URL", h)
		}
	}
	if len(cfg.Audiences) == 0 {
		cfg.Audiences = []string{DefaultAudience}
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.KeyRefreshInterval <= 0 {
		cfg.KeyRefreshInterval = DefaultKeyRefreshInterval
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.MaxCachedTokens <= 0 {
		cfg.MaxCachedTokens = DefaultMaxCachedTokens
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Validator{
		cfg:      cfg,
		client:   cfg.HTTPClient,
		issuers:  make(map[string]string),
		keySets:  make(map[string]*keySet),
		audience: jwt.Audience(cfg.Audiences),
	}
	if v.client == nil {
		v.client = &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		}}
	}
	for _, t := range cfg.Tenants {
		t = strings.ToLower(t)
		v.issuers[cfg.AuthorityHost+"/"+t+"/v2.0"] = t
		v.issuers[cfg.V1IssuerHost+"/"+t+"/"] = t
		v.keySets[t] = &keySet{v: v, tenant: t}
	}
	v.mu.cache = make(map[[32]byte]*Identity)
	v.mu.inflight = make(map[[32]byte]*check)
	return v, nil
}

// Validate checks token and returns the identity it speaks for. Errors are
// *RejectedError for tokens that are not accepted and other errors when the
// keys could not be fetched; either way the client is refused. ctx bounds
// the wait for a check another caller is making; a key fetch is bounded by
// FetchTimeout.
func (v *Validator) Validate(ctx context.Context, token string) (*Identity, error) {
	if len(token) == 0 || len(token) > maxTokenLen {
		v.refused.Add(1)
		return nil, rejected("token length %d out of range", len(token))
	}
	key := sha256.Sum256([]byte(token))
	now := v.cfg.Now()
	v.mu.Lock()
	if id, ok := v.mu.cache[key]; ok {
		if now.Before(id.ExpiresAt.Add(v.cfg.ClockSkew)) {
			v.mu.Unlock()
			v.hits.Add(1)
			return id, nil
		}
		delete(v.mu.cache, key)
	}
	c, running := v.mu.inflight[key]
	if !running {
		c = &check{done: make(chan struct{})}
		v.mu.inflight[key] = c
	}
	v.mu.Unlock()

	if running {
		v.shared.Add(1)
		select {
		case <-c.done:
			if c.err != nil {
				v.refused.Add(1)
			}
			return c.id, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	c.id, c.err = v.validate(token)
	v.mu.Lock()
	delete(v.mu.inflight, key)
	if c.err == nil {
		v.storeLocked(key, c.id, now)
	}
	v.mu.Unlock()
	close(c.done)
	if c.err != nil {
		v.refused.Add(1)
	}
	return c.id, c.err
}

// storeLocked caches id; when the cache is full it first drops expired
// entries, and if that frees nothing the token is not cached.
func (v *Validator) storeLocked(key [32]byte, id *Identity, now time.Time) {
	if len(v.mu.cache) >= v.cfg.MaxCachedTokens {
		for k, e := range v.mu.cache {
			if !now.Before(e.ExpiresAt) {
				delete(v.mu.cache, k)
			}
		}
		if len(v.mu.cache) >= v.cfg.MaxCachedTokens {
			return
		}
	}
	v.mu.cache[key] = id
}

// claims are the access token claims pgferry reads, v1 and v2.
type claims struct {
	jwt.Claims
	TenantID          string   `json:"tid"`
	ObjectID          string   `json:"oid"`
	UPN               string   `json:"upn"`
	PreferredUsername string   `json:"preferred_username"`
	AppID             string   `json:"appid"`
	AZP               string   `json:"azp"`
	IDType            string   `json:"idtyp"`
	Scope             string   `json:"scp"`
	Groups            []string `json:"groups"`
}

// allowedAlgorithms: Entra signs access tokens with RS256 only. Listing
// only it makes the parser refuse "none", HMAC (a public key used as an
// HMAC secret) and every other algorithm before any key is looked at.
var allowedAlgorithms = []jose.SignatureAlgorithm{jose.RS256}

func (v *Validator) validate(token string) (*Identity, error) {
	tok, err := jwt.ParseSigned(token, allowedAlgorithms)
	if err != nil {
		return nil, rejected("malformed or not RS256: %v", err)
	}
	if len(tok.Headers) != 1 {
		return nil, rejected("%d signatures", len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		return nil, rejected("no key id")
	}
	// The issuer picks the tenant, hence the key set; it is read before the
	// signature is checked and checked again from the verified claims.
	var unverified claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, rejected("claims: %v", err)
	}
	tenant, ok := v.issuers[unverified.Issuer]
	if !ok {
		return nil, rejected("issuer %q not allowed", truncate(unverified.Issuer, 200))
	}
	pub, err := v.keySets[tenant].key(kid)
	if err != nil {
		return nil, err
	}
	v.sigChecks.Add(1)
	var c claims
	if err := tok.Claims(pub, &c); err != nil {
		return nil, rejected("signature: %v", err)
	}
	if v.issuers[c.Issuer] != tenant {
		return nil, rejected("issuer changed between reads")
	}
	if c.Expiry == nil {
		return nil, rejected("no exp")
	}
	err = c.Claims.ValidateWithLeeway(jwt.Expected{AnyAudience: v.audience, Time: v.cfg.Now()}, v.cfg.ClockSkew)
	if err != nil {
		return nil, rejected("%v (aud %q, exp %s)", err, truncate(strings.Join(c.Audience, ","), 200), c.Expiry.Time().UTC().Format(time.RFC3339))
	}
	if c.TenantID != "" && !strings.EqualFold(c.TenantID, tenant) {
		return nil, rejected("tid %q does not match the issuer's tenant", truncate(c.TenantID, 100))
	}
	if c.ObjectID == "" {
		return nil, rejected("no oid")
	}
	id := &Identity{
		Tenant:    tenant,
		ObjectID:  strings.ToLower(c.ObjectID),
		Groups:    c.Groups,
		ExpiresAt: c.Expiry.Time(),
		AppID:     c.AppID,
	}
	if id.AppID == "" {
		id.AppID = c.AZP
	}
	id.AppID = strings.ToLower(id.AppID)
	upn := c.UPN
	if upn == "" {
		upn = c.PreferredUsername
	}
	// Entra sets idtyp only when asked to (an optional claim); without it,
	// an app-only token is one with no delegated scope and no user name.
	id.App = c.IDType == "app" || (c.IDType == "" && c.Scope == "" && upn == "")
	if !id.App {
		id.UPN = upn
	}
	return id, nil
}

// Stats returns the cumulative counters.
func (v *Validator) Stats() ValidatorStats {
	return ValidatorStats{
		SignatureChecks:  v.sigChecks.Load(),
		CacheHits:        v.hits.Load(),
		SharedChecks:     v.shared.Load(),
		Rejected:         v.refused.Load(),
		DiscoveryFetches: v.discoveries.Load(),
		KeyFetches:       v.keyFetches.Load(),
	}
}

// keySet is one tenant's signing keys.
type keySet struct {
	v      *Validator
	tenant string

	// mu guards the fields inside it; fetches run outside it.
	mu struct {
		sync.Mutex
		keys      map[string]*rsa.PublicKey
		jwksURI   string
		lastFetch time.Time // start of the last fetch
		lastOK    bool      // whether it succeeded
		fetching  chan struct{}
	}
}

// key returns the key named kid, fetching the key set if it is unknown and
// the last fetch is old enough (KeyRefreshInterval after a success,
// failedFetchRetry after a failure). Concurrent callers share one fetch.
func (ks *keySet) key(kid string) (*rsa.PublicKey, error) {
	for attempt := 0; ; attempt++ {
		ks.mu.Lock()
		if k, ok := ks.mu.keys[kid]; ok {
			ks.mu.Unlock()
			return k, nil
		}
		if ch := ks.mu.fetching; ch != nil {
			ks.mu.Unlock()
			<-ch // bounded by FetchTimeout
			if attempt > 0 {
				return nil, rejected("unknown key id %q", truncate(kid, 100))
			}
			continue
		}
		wait := ks.v.cfg.KeyRefreshInterval
		if !ks.mu.lastOK {
			wait = failedFetchRetry
		}
		now := ks.v.cfg.Now()
		if attempt > 0 || (!ks.mu.lastFetch.IsZero() && now.Sub(ks.mu.lastFetch) < wait) {
			ok := ks.mu.lastOK
			ks.mu.Unlock()
			if !ok {
				return nil, fmt.Errorf("signing keys of tenant %s unavailable (next fetch within %s)", ks.tenant, wait)
			}
			return nil, rejected("unknown key id %q", truncate(kid, 100))
		}
		ch := make(chan struct{})
		ks.mu.fetching, ks.mu.lastFetch = ch, now
		uri := ks.mu.jwksURI
		ks.mu.Unlock()

		keys, uri, err := ks.fetch(uri)
		ks.mu.Lock()
		ks.mu.fetching = nil
		ks.mu.lastOK = err == nil
		if err == nil {
			ks.mu.keys, ks.mu.jwksURI = keys, uri
		}
		ks.mu.Unlock()
		close(ch)
		if err != nil {
			return nil, fmt.Errorf("signing keys of tenant %s: %w", ks.tenant, err)
		}
	}
}

// fetch reads the discovery document (unless its jwks_uri is known) and
// the key set, keeping the RSA signing keys.
func (ks *keySet) fetch(jwksURI string) (map[string]*rsa.PublicKey, string, error) {
	v := ks.v
	ctx, cancel := context.WithTimeout(context.Background(), v.cfg.FetchTimeout)
	defer cancel()
	if jwksURI == "" {
		v.discoveries.Add(1)
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, v.cfg.AuthorityHost+"/"+ks.tenant+"/v2.0/.well-known/openid-configuration", &doc); err != nil {
			return nil, "", fmt.Errorf("discovery: %w", err)
		}
		if want := v.cfg.AuthorityHost + "/" + ks.tenant + "/v2.0"; !strings.EqualFold(doc.Issuer, want) {
			return nil, "", fmt.Errorf("discovery: issuer %q, want %q", truncate(doc.Issuer, 200), want)
		}
		jwksURI = doc.JWKSURI
	}
	v.keyFetches.Add(1)
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, jwksURI, &set); err != nil {
		return nil, "", fmt.Errorf("key set: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(set.Keys))
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue // a key type go-jose cannot read is not one Entra signs tokens with
		}
		pub, ok := k.Key.(*rsa.PublicKey)
		if !ok || k.KeyID == "" || (k.Use != "" && k.Use != "sig") ||
			(k.Algorithm != "" && k.Algorithm != string(jose.RS256)) || pub.N.BitLen() < minRSABits {
			continue
		}
		keys[k.KeyID] = pub
	}
	if len(keys) == 0 {
		return nil, "", errors.New("key set: no RSA signing key")
	}
	return keys, jwksURI, nil
}

// getJSON fetches an https URL and decodes its JSON body into out.
func (v *Validator) getJSON(ctx context.Context, rawURL string, out any) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("%q is not an https URL", truncate(rawURL, 200))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.Request != nil && resp.Request.URL.Scheme != "https" {
		// A redirect left TLS: keys read in clear text could be anyone's.
		return fmt.Errorf("GET %s: redirected to %s", rawURL, resp.Request.URL.Redacted())
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxDocument))
		return fmt.Errorf("GET %s: HTTP %d", rawURL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", rawURL, err)
	}
	if len(body) > maxDocument {
		return fmt.Errorf("GET %s: document over %d bytes", rawURL, maxDocument)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", rawURL, err)
	}
	return nil
}
