package entra_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/internal/entratest"
)

func newValidator(t *testing.T, is *entratest.Issuer, mod func(*entra.ValidatorConfig)) *entra.Validator {
	t.Helper()
	cfg := entra.ValidatorConfig{
		Tenants:       []string{entratest.Tenant},
		AuthorityHost: is.AuthorityHost(),
		V1IssuerHost:  is.V1IssuerHost(),
		HTTPClient:    is.Client(),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := entra.NewValidator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func with(c map[string]any, kv ...any) map[string]any {
	c = maps.Clone(c)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
			continue
		}
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func TestValidatorAcceptsEntraShapedTokensAndRefusesForgeries(t *testing.T) {
	is := entratest.NewIssuer(t)
	v := newValidator(t, is, nil)
	user := is.UserClaims("alice@contoso.com", "11111111-0000-0000-0000-000000000001", time.Hour)
	app := is.AppClaims("22222222-0000-0000-0000-000000000002", "33333333-0000-0000-0000-000000000003", time.Hour)
	now := time.Now()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := is.Sign(t, user)

	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"v2 user token", valid, true},
		{"v1 app token", is.Sign(t, app), true},
		{"v1 issuer with the v2 shape", is.Sign(t, with(user, "iss", is.V1Issuer())), true},
		{"expired", is.Sign(t, with(user, "exp", now.Add(-2*time.Minute).Unix())), false},
		{"expired within the skew", is.Sign(t, with(user, "exp", now.Add(-20*time.Second).Unix())), true},
		{"not yet valid", is.Sign(t, with(user, "nbf", now.Add(5*time.Minute).Unix())), false},
		{"no exp", is.Sign(t, with(user, "exp", nil)), false},
		{"wrong audience", is.Sign(t, with(user, "aud", "https://management.azure.com")), false},
		{"wrong issuer", is.Sign(t, with(user, "iss", "https://login.microsoftonline.com/"+entratest.Tenant+"/v2.0")), false},
		{"other tenant", is.Sign(t, with(user, "iss", is.AuthorityHost()+"/00000000-0000-0000-0000-000000000000/v2.0")), false},
		{"tid of another tenant", is.Sign(t, with(user, "tid", "00000000-0000-0000-0000-000000000000")), false},
		{"no oid", is.Sign(t, with(user, "oid", nil)), false},
		{"unknown key id", entratest.SignRS256(t, other, "key-unknown", user), false},
		{"known key id, other key", entratest.SignRS256(t, other, "key-1", user), false},
		{"alg none", entratest.Unsigned(t, "key-1", user), false},
		{"HS256 with the public key", entratest.SignHS256(t, is.PublicKeyPEM(), "key-1", user), false},
		{"tampered payload", entratest.Tamper(t, valid, with(user, "preferred_username", "admin@contoso.com")), false},
		{"garbage", "not-a-token", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Validate(context.Background(), tc.token)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				var re *entra.RejectedError
				if !errors.As(err, &re) {
					t.Fatalf("got %v, %v; want a *RejectedError", id, err)
				}
			}
		})
	}
	if n := is.KeyRequests.Load(); n != 1 {
		t.Errorf("%d key set fetches, want 1 (the unknown key id came within the refresh interval)", n)
	}
}

func TestIdentitiesMatchOnlyTheirOwnKindOfPrincipal(t *testing.T) {
	is := entratest.NewIssuer(t)
	v := newValidator(t, is, nil)
	const appID = "22222222-0000-0000-0000-000000000002"
	user := is.UserClaims("Alice@Contoso.com", "11111111-0000-0000-0000-000000000001", time.Hour)
	user["groups"] = []string{"44444444-0000-0000-0000-000000000004"}
	userVia := with(user, "azp", appID) // a user signed in through the service principal's app
	app := is.AppClaims(appID, "33333333-0000-0000-0000-000000000003", time.Hour)
	p := func(s string) entra.Principal {
		pr, err := entra.ParsePrincipal(s)
		if err != nil {
			t.Fatal(err)
		}
		return pr
	}
	tests := []struct {
		name      string
		claims    map[string]any
		principal string
		want      bool
	}{
		{"user by upn, any case", user, "user:alice@contoso.com", true},
		{"user by object id", user, "object:11111111-0000-0000-0000-000000000001", true},
		{"user by group", user, "group:44444444-0000-0000-0000-000000000004", true},
		{"user, other upn", user, "user:bob@contoso.com", false},
		{"user token carrying the app id", userVia, "app:" + appID, false},
		{"app by app id", app, "app:" + appID, true},
		{"app by object id", app, "object:33333333-0000-0000-0000-000000000003", true},
		{"app is no user", with(app, "preferred_username", "alice@contoso.com"), "user:alice@contoso.com", false},
		{"app without idtyp nor scope", with(app, "idtyp", nil), "app:" + appID, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Validate(context.Background(), is.Sign(t, tc.claims))
			if err != nil {
				t.Fatal(err)
			}
			if got := id.Matches(p(tc.principal)); got != tc.want {
				t.Fatalf("%v matches %s = %v, want %v", id, tc.principal, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"alice", "user:", "role:x", ":x"} {
		if _, err := entra.ParsePrincipal(bad); err == nil {
			t.Errorf("ParsePrincipal(%q) accepted", bad)
		}
	}
}

func TestABurstWithOneTokenCostsOneSignatureCheckAndOneKeyFetch(t *testing.T) {
	is := entratest.NewIssuer(t)
	v := newValidator(t, is, nil)
	tok := is.Sign(t, is.UserClaims("alice@contoso.com", "11111111-0000-0000-0000-000000000001", time.Hour))
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Validate(context.Background(), tok); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	st := v.Stats()
	if failed.Load() != 0 || st.SignatureChecks != 1 || st.CacheHits+st.SharedChecks != 499 || st.KeyFetches != 1 || st.DiscoveryFetches != 1 || is.KeyRequests.Load() != 1 {
		t.Fatalf("failed=%d stats=%+v key requests=%d; want 0 failures, 1 signature check, 1 key fetch",
			failed.Load(), st, is.KeyRequests.Load())
	}
}

func TestKeyRotationIsPickedUpAndRandomKeyIDsAreRateLimited(t *testing.T) {
	is := entratest.NewIssuer(t)
	var clock atomic.Int64 // offset from time.Now
	v := newValidator(t, is, func(c *entra.ValidatorConfig) {
		c.KeyRefreshInterval = time.Minute
		c.Now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	})
	claims := is.UserClaims("alice@contoso.com", "11111111-0000-0000-0000-000000000001", time.Hour)
	if _, err := v.Validate(context.Background(), is.Sign(t, claims)); err != nil {
		t.Fatal(err)
	}
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forge := func() {
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := entratest.SignRS256(t, forger, fmt.Sprintf("forged-%d-%d", clock.Load(), i), claims)
				if _, err := v.Validate(context.Background(), tok); err == nil {
					t.Error("a forged token was accepted")
				}
			}()
		}
		wg.Wait()
	}
	forge()
	if n := is.KeyRequests.Load(); n != 1 {
		t.Fatalf("200 forged key ids within the interval made %d key fetches, want 1 (the first)", n)
	}
	clock.Add(int64(2 * time.Minute))
	forge()
	if n := is.KeyRequests.Load(); n != 2 {
		t.Fatalf("after the interval 200 forged key ids made %d key fetches in all, want 2", n)
	}

	// Rotation: a token signed with a newly published key is accepted
	// once the interval since the last fetch has passed.
	is.Rotate(t)
	rotated := is.Sign(t, with(claims, "jti", "rotated"))
	if _, err := v.Validate(context.Background(), rotated); err == nil {
		t.Fatal("a new key was fetched within the refresh interval")
	}
	clock.Add(int64(2 * time.Minute))
	if _, err := v.Validate(context.Background(), rotated); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
	if n := is.KeyRequests.Load(); n != 3 || is.DiscoveryRequests.Load() != 1 {
		t.Fatalf("key requests %d, discovery requests %d; want 3 and 1", n, is.DiscoveryRequests.Load())
	}
}

func TestCachedTokensAreAcceptedUntilTheyExpireAndKeysSurviveAnOutage(t *testing.T) {
	is := entratest.NewIssuer(t)
	var clock atomic.Int64
	v := newValidator(t, is, func(c *entra.ValidatorConfig) {
		c.ClockSkew = time.Second
		c.Now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	})
	claims := is.UserClaims("alice@contoso.com", "11111111-0000-0000-0000-000000000001", time.Minute)
	tok := is.Sign(t, claims)
	for range 3 {
		if _, err := v.Validate(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if st := v.Stats(); st.SignatureChecks != 1 || st.CacheHits != 2 {
		t.Fatalf("stats %+v, want 1 check and 2 cache hits", st)
	}
	is.SetFailing(true)
	if _, err := v.Validate(context.Background(), is.Sign(t, with(claims, "jti", "2"))); err != nil {
		t.Fatalf("known keys stopped working while the endpoint is down: %v", err)
	}
	clock.Add(int64(2 * time.Minute))
	if _, err := v.Validate(context.Background(), tok); err == nil {
		t.Fatal("an expired cached token was accepted")
	}
}

func TestNewValidatorRefusesPlainHTTPAndNoTenant(t *testing.T) {
	for _, cfg := range []entra.ValidatorConfig{
		{},
		{Tenants: []string{entratest.Tenant}, AuthorityHost: "http://login.example"},
		{Tenants: []string{entratest.Tenant}, V1IssuerHost: "http://sts.example"},
	} {
		if _, err := entra.NewValidator(cfg); err == nil {
			t.Errorf("NewValidator(%+v) accepted", cfg)
		}
	}
}
