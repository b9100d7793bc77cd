package router_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/entratest"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// Identities of the fake tenant.
const (
	miAppID   = "22222222-0000-0000-0000-000000000002" // a managed identity's client id
	miObject  = "33333333-0000-0000-0000-000000000003"
	aliceUPN  = "alice@contoso.com"
	aliceOID  = "11111111-0000-0000-0000-000000000001"
	bobUPN    = "bob@contoso.com"
	bobOID    = "55555555-0000-0000-0000-000000000005"
	readersID = "44444444-0000-0000-0000-000000000004" // a group's object id
)

// entraClientFerry starts pgferry whose "app" database takes Entra tokens
// from clients (TLS required) issued by is: entra_rw is the managed
// identity, entra_ro is alice or any member of the readers group. The
// server login uses the database entry's password for the mapped role.
func entraClientFerry(t *testing.T, is *entratest.Issuer, keyRefresh time.Duration, mods ...func(*configs.Config)) *ferrytest.Ferry {
	t.Helper()
	ctx := testContext(t)
	for _, role := range []string{"entra_rw", "entra_ro"} {
		if err := cluster.CreateRole(ctx, role, "role-secret"); err != nil {
			if err := cluster.Exec(ctx, fmt.Sprintf(`alter role %q password 'role-secret'`, role)); err != nil {
				t.Fatal(err)
			}
		}
		if err := cluster.Exec(ctx, fmt.Sprintf(`grant all on database app to %q`, role)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	cfg.AuthFailureDelay = 0
	db := cfg.Databases["app"]
	db.ClientAuth = "entra"
	db.User = ""
	db.Password = configs.Secret("role-secret")
	cfg.Databases["app"] = db
	cfg.ClientEntra = configs.ClientEntra{
		Tenants:            []string{entratest.Tenant},
		AuthorityHost:      is.AuthorityHost(),
		V1IssuerHost:       is.V1IssuerHost(),
		KeyRefreshInterval: configs.Duration(keyRefresh),
		Roles: map[string][]string{
			"entra_rw": {"app:" + miAppID},
			"entra_ro": {"user:" + aliceUPN, "group:" + readersID},
		},
	}
	for _, mod := range mods {
		mod(cfg)
	}
	return ferrytest.Start(t, cfg, func(o *router.Options) { o.EntraHTTPClient = is.Client() })
}

func tokenDSN(f *ferrytest.Ferry, user, token, sslmode string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s password=%s sslmode=%s", f.Addr.Port, user, token, sslmode)
}

func currentUser(ctx context.Context, dsn string) (string, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	tx, err := c.Begin(ctx)
	if err != nil {
		return "", err
	}
	var user string
	if err := tx.QueryRow(ctx, "select current_user").Scan(&user); err != nil {
		return "", err
	}
	return user, tx.Commit(ctx)
}

func claimsWith(c map[string]any, kv ...any) map[string]any {
	c = maps.Clone(c)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func TestClientsLogInWithEntraTokensAsTheirMappedRoleAndForgeriesAreRefused(t *testing.T) {
	is := entratest.NewIssuer(t)
	f := entraClientFerry(t, is, time.Hour)
	ctx := testContext(t)

	mi := is.AppClaims(miAppID, miObject, time.Hour)
	alice := is.UserClaims(aliceUPN, aliceOID, time.Hour)
	bobInGroup := claimsWith(is.UserClaims(bobUPN, bobOID, time.Hour), "groups", []string{readersID})
	miToken := is.Sign(t, mi)

	// Accepted: each identity runs transactions as its mapped role.
	for _, tc := range []struct{ name, user, token string }{
		{"managed identity (v1 app token)", "entra_rw", miToken},
		{"user by UPN (v2 token)", "entra_ro", is.Sign(t, alice)},
		{"user by group", "entra_ro", is.Sign(t, bobInGroup)},
	} {
		got, err := currentUser(ctx, tokenDSN(f, tc.user, tc.token, "require"))
		if err != nil || got != tc.user {
			t.Fatalf("%s: current_user %q, %v; want %s", tc.name, got, err, tc.user)
		}
	}

	// psql with the token in PGPASSWORD.
	cmd := exec.CommandContext(ctx, "psql", "-X", "-At", "-c", "select current_user",
		fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=entra_rw sslmode=require", f.Addr.Port))
	cmd.Env = append(os.Environ(), "PGPASSWORD="+miToken)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "entra_rw" {
		t.Fatalf("psql: %q, %v", out, err)
	}

	// Refused, all with the same uninformative 28000.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	refused := []struct{ name, user, token string }{
		{"expired", "entra_rw", is.Sign(t, claimsWith(mi, "exp", now.Add(-5*time.Minute).Unix()))},
		{"not yet valid", "entra_rw", is.Sign(t, claimsWith(mi, "nbf", now.Add(10*time.Minute).Unix()))},
		{"wrong audience", "entra_rw", is.Sign(t, claimsWith(mi, "aud", "https://management.azure.com"))},
		{"wrong issuer", "entra_rw", is.Sign(t, claimsWith(mi, "iss", "https://sts.windows.net/"+entratest.Tenant+"/"))},
		{"unknown key id", "entra_rw", entratest.SignRS256(t, other, "key-unknown", mi)},
		{"alg none", "entra_rw", entratest.Unsigned(t, "key-1", mi)},
		{"HS256 signed with the public key", "entra_rw", entratest.SignHS256(t, is.PublicKeyPEM(), "key-1", mi)},
		{"tampered payload", "entra_rw", entratest.Tamper(t, is.Sign(t, alice), claimsWith(alice, "preferred_username", "admin@contoso.com"))},
		{"another identity's valid token", "entra_rw", is.Sign(t, alice)},
		{"a user token carrying the identity's app id", "entra_rw", is.Sign(t, claimsWith(alice, "azp", miAppID))},
		{"a role with no identities", "app", miToken},
		{"not a token", "entra_rw", "app-secret"},
	}
	for _, tc := range refused {
		_, err := currentUser(ctx, tokenDSN(f, tc.user, tc.token, "require"))
		pe := expectPgError(t, err, "28000")
		if want := fmt.Sprintf("Entra ID authentication failed for user %q", tc.user); pe.Message != want {
			t.Fatalf("%s: message %q, want %q", tc.name, pe.Message, want)
		}
	}
	// Without TLS pgferry does not even ask for the token.
	_, err = currentUser(ctx, tokenDSN(f, "entra_rw", miToken, "disable"))
	if pe := expectPgError(t, err, "28000"); pe.Message != "SSL required" {
		t.Fatalf("plaintext client: %q, want SSL required", pe.Message)
	}

	logs := f.Logs()
	if !strings.Contains(logs, "entra token refused") {
		t.Fatal("refusals are not logged")
	}
	for _, tok := range append([]string{miToken}, refused[0].token, refused[5].token) {
		if strings.Contains(logs, tok) || strings.Contains(logs, strings.Split(tok, ".")[1]) {
			t.Fatal("a token leaked into the log")
		}
	}
	st, _ := f.Server.EntraStats()
	if is.KeyRequests.Load() != 1 || is.DiscoveryRequests.Load() != 1 || st.KeyFetches != 1 {
		t.Fatalf("key requests %d, discovery requests %d, stats %+v; want one of each", is.KeyRequests.Load(), is.DiscoveryRequests.Load(), st)
	}
}

// A burst of logins with one token costs one signature check: the first
// login checks it, those arriving meanwhile share that check, the rest hit
// the cache. The signing keys are fetched by a login before the burst (with
// another token of the same identity): with the race detector on a loaded
// machine, 500 TLS handshakes at once starved the fetch from the test's own
// issuer past its 10 s bound, and every login sharing it was refused. A
// burst that shares one key fetch is auth/entra's
// TestABurstWithOneTokenCostsOneSignatureCheckAndOneKeyFetch.
func TestABurstOfEntraLoginsWithOneTokenCostsOneSignatureCheck(t *testing.T) {
	is := entratest.NewIssuer(t)
	f := entraClientFerry(t, is, time.Hour)
	ctx := testContext(t)
	first := is.Sign(t, is.AppClaims(miAppID, miObject, 30*time.Minute))
	if u, err := currentUser(ctx, tokenDSN(f, "entra_rw", first, "require")); err != nil || u != "entra_rw" {
		t.Fatalf("the login before the burst: %q, %v", u, err)
	}
	before, _ := f.Server.EntraStats()
	token := is.Sign(t, is.AppClaims(miAppID, miObject, time.Hour))

	const clients = 500
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if u, err := currentUser(ctx, tokenDSN(f, "entra_rw", token, "require")); err != nil || u != "entra_rw" {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("%q, %v", u, err))
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d logins failed, first: %v", n, clients, firstErr.Load())
	}
	st, ok := f.Server.EntraStats()
	checks, others := st.SignatureChecks-before.SignatureChecks, st.CacheHits+st.SharedChecks-before.CacheHits-before.SharedChecks
	if !ok || checks != 1 || others != clients-1 || st.KeyFetches != 1 || is.KeyRequests.Load() != 1 {
		t.Fatalf("the burst: %d signature checks, %d cache hits or shared checks; key fetches %d, key requests %d; want 1, %d, 1 and 1", checks, others, st.KeyFetches, is.KeyRequests.Load(), clients-1)
	}
}

func TestEntraKeyRotationIsPickedUpAndForgedKeyIDsAreRateLimited(t *testing.T) {
	is := entratest.NewIssuer(t)
	const interval = 2 * time.Second
	f := entraClientFerry(t, is, interval)
	ctx := testContext(t)
	mi := is.AppClaims(miAppID, miObject, time.Hour)
	if u, err := currentUser(ctx, tokenDSN(f, "entra_rw", is.Sign(t, mi), "require")); err != nil || u != "entra_rw" {
		t.Fatalf("first login: %q, %v", u, err)
	}

	// 300 forged tokens with random key ids, concurrently.
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := entratest.SignRS256(t, forger, fmt.Sprintf("forged-%d", i), claimsWith(mi, "jti", fmt.Sprint(i)))
			if _, err := currentUser(ctx, tokenDSN(f, "entra_rw", tok, "require")); err == nil {
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if accepted.Load() != 0 {
		t.Fatalf("%d forged tokens were accepted", accepted.Load())
	}
	// One fetch at the start, then at most one per interval.
	limit := int64(1 + 1 + elapsed/interval)
	if n := is.KeyRequests.Load(); n > limit {
		t.Fatalf("300 forged key ids over %s made %d key fetches, want at most %d", elapsed, n, limit)
	}
	t.Logf("300 forged key ids over %s: %d key fetches", elapsed.Round(time.Millisecond), is.KeyRequests.Load())

	// A new signing key: tokens signed with it are accepted once pgferry
	// refetches the keys (at most one interval later).
	is.Rotate(t)
	rotated := is.Sign(t, claimsWith(mi, "jti", "rotated"))
	ferrytest.Eventually(t, 10*interval, "a token signed with the rotated key", func() (bool, error) {
		u, err := currentUser(ctx, tokenDSN(f, "entra_rw", rotated, "require"))
		return err == nil && u == "entra_rw", err
	})
}

func TestReloadingEntraRolesTakesEffectAndKeepsTheFetchedKeys(t *testing.T) {
	is := entratest.NewIssuer(t)
	f := entraClientFerry(t, is, time.Hour)
	ctx := testContext(t)
	bob := is.Sign(t, is.UserClaims(bobUPN, bobOID, time.Hour))
	if _, err := currentUser(ctx, tokenDSN(f, "entra_rw", bob, "require")); err == nil {
		t.Fatal("bob logged in as entra_rw before being listed")
	}
	next := *f.Server.Config()
	next.ClientEntra.Roles = maps.Clone(next.ClientEntra.Roles)
	next.ClientEntra.Roles["entra_rw"] = []string{"app:" + miAppID, "object:" + bobOID}
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if u, err := currentUser(ctx, tokenDSN(f, "entra_rw", bob, "require")); err != nil || u != "entra_rw" {
		t.Fatalf("after reload: %q, %v", u, err)
	}
	if n := is.KeyRequests.Load(); n != 1 {
		t.Fatalf("%d key fetches; a reload that leaves [client_entra]'s issuer settings alone must keep the keys", n)
	}
}

func TestAUserWithClientAuthEntraLogsInWithATokenWhileOthersGoThroughAuthType(t *testing.T) {
	is := entratest.NewIssuer(t)
	f := entraClientFerry(t, is, time.Hour, func(c *configs.Config) {
		db := c.Databases["app"]
		db.ClientAuth = ""
		c.Databases["app"] = db
		c.Users = maps.Clone(c.Users)
		c.Users["entra_ro"] = configs.User{ClientAuth: "entra"}
	})
	ctx := testContext(t)
	alice := is.Sign(t, is.UserClaims(aliceUPN, aliceOID, time.Hour))
	if u, err := currentUser(ctx, tokenDSN(f, "entra_ro", alice, "require")); err != nil || u != "entra_ro" {
		t.Fatalf("entra_ro with a token: %q, %v", u, err)
	}
	// Other users go through auth_type (SCRAM): a token is no password
	// for them.
	_, err := currentUser(ctx, tokenDSN(f, "app", alice, "require"))
	expectPgError(t, err, "28P01")
	// entra_rw has no client_auth of its own and no password: refused.
	_, err = currentUser(ctx, tokenDSN(f, "entra_rw", is.Sign(t, is.AppClaims(miAppID, miObject, time.Hour)), "require"))
	expectPgError(t, err, "28P01")
}
