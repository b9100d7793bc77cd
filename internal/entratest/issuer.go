// Package entratest is a fake Microsoft Entra ID token issuer for tests: an
// OpenID discovery document and a JSON Web Key Set served over TLS on
// loopback, RSA keys generated per issuer, key rotation, and tokens shaped
// like Entra's v1 and v2 access tokens. It counts the requests it serves
// so tests can assert how often pgferry fetched keys.
package entratest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Tenant is the fake directory id.
const Tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

// Audience is Azure Database for PostgreSQL's token audience.
const Audience = "https://ossrdbms-aad.database.windows.net"

// Issuer is a fake Entra tenant. Safe for concurrent use.
type Issuer struct {
	srv *httptest.Server
	// DiscoveryRequests and KeyRequests count the requests served.
	DiscoveryRequests, KeyRequests atomic.Int64

	mu      sync.Mutex
	keys    map[string]*rsa.PrivateKey // published keys by kid
	current string                     // the kid tokens are signed with
	serial  int
	failing bool
}

// NewIssuer starts an issuer with one signing key; it stops at the end of
// the test.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{keys: make(map[string]*rsa.PrivateKey)}
	is.Rotate(t)
	is.srv = httptest.NewTLSServer(http.HandlerFunc(is.serve))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	failing := is.failing
	is.mu.Unlock()
	switch r.URL.Path {
	case "/" + Tenant + "/v2.0/.well-known/openid-configuration":
		is.DiscoveryRequests.Add(1)
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.V2Issuer(),
			"jwks_uri":                              is.srv.URL + "/" + Tenant + "/discovery/v2.0/keys",
			"token_endpoint":                        is.srv.URL + "/" + Tenant + "/oauth2/v2.0/token",
			"authorization_endpoint":                is.srv.URL + "/" + Tenant + "/oauth2/v2.0/authorize",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case "/" + Tenant + "/discovery/v2.0/keys":
		is.KeyRequests.Add(1)
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		is.mu.Lock()
		var set jose.JSONWebKeySet
		for kid, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Use: "sig", Algorithm: "RS256"})
		}
		is.mu.Unlock()
		json.NewEncoder(w).Encode(set)
	default:
		http.NotFound(w, r)
	}
}

// AuthorityHost is the https URL to configure as the authority host.
func (is *Issuer) AuthorityHost() string { return is.srv.URL }

// V1IssuerHost is the host of v1 issuers ({host}/{tenant}/).
func (is *Issuer) V1IssuerHost() string { return is.srv.URL + "/sts" }

// V2Issuer is the tenant's v2 issuer.
func (is *Issuer) V2Issuer() string { return is.srv.URL + "/" + Tenant + "/v2.0" }

// V1Issuer is the tenant's v1 issuer.
func (is *Issuer) V1Issuer() string { return is.V1IssuerHost() + "/" + Tenant + "/" }

// Client trusts the issuer's certificate.
func (is *Issuer) Client() *http.Client { return is.srv.Client() }

// CertPEM returns the issuer's TLS certificate in PEM.
func (is *Issuer) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.srv.Certificate().Raw})
}

// SetFailing makes the discovery and key endpoints answer 503.
func (is *Issuer) SetFailing(failing bool) {
	is.mu.Lock()
	is.failing = failing
	is.mu.Unlock()
}

// Rotate publishes a new key and signs tokens with it from now on; the
// old keys stay published. It returns the new kid.
func (is *Issuer) Rotate(t testing.TB) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.serial++
	kid := fmt.Sprintf("key-%d", is.serial)
	is.keys[kid] = k
	is.current = kid
	return kid
}

// Unpublish removes kid from the key set (tokens signed with it stop
// validating after pgferry refetches).
func (is *Issuer) Unpublish(kid string) {
	is.mu.Lock()
	delete(is.keys, kid)
	is.mu.Unlock()
}

// PublicKeyPEM returns the current key's public key in PEM, the secret an
// HMAC key-confusion forgery would use.
func (is *Issuer) PublicKeyPEM() []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	der, _ := x509.MarshalPKIXPublicKey(&is.keys[is.current].PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// UserClaims returns the claims of a v2 delegated token for upn, valid for
// ttl from now.
func (is *Issuer) UserClaims(upn, oid string, ttl time.Duration) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud": Audience, "iss": is.V2Issuer(), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"tid": Tenant, "oid": oid, "sub": "sub-" + oid, "preferred_username": upn, "name": upn,
		"azp": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", // the Azure CLI's app id
		"scp": "user_impersonation", "ver": "2.0",
	}
}

// AppClaims returns the claims of a v1 app-only token (a managed identity
// or a service principal) with the given client (app) id.
func (is *Issuer) AppClaims(appID, oid string, ttl time.Duration) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud": Audience, "iss": is.V1Issuer(), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"tid": Tenant, "oid": oid, "sub": oid, "appid": appID, "appidacr": "2", "idtyp": "app", "ver": "1.0",
	}
}

// Sign signs claims with the current key (RS256, its kid in the header).
func (is *Issuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	kid, key := is.current, is.keys[is.current]
	is.mu.Unlock()
	return SignRS256(t, key, kid, claims)
}

// SignRS256 signs claims with key under kid.
func SignRS256(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: key}, kid, claims)
}

// SignHS256 signs claims with an HMAC secret (a key-confusion forgery when
// the secret is the issuer's public key).
func SignHS256(t testing.TB, secret []byte, kid string, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.HS256, Key: secret}, kid, claims)
}

func sign(t testing.TB, key jose.SigningKey, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
	s, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Unsigned returns an "alg":"none" token with claims.
func Unsigned(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return b64(h) + "." + b64(p) + "."
}

// Tamper replaces the payload of a signed token with claims, keeping its
// header and signature.
func Tamper(t testing.TB, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + b64(p) + "." + parts[2]
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
