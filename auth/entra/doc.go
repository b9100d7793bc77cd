// Package entra supplies Microsoft Entra ID access tokens as the passwords of
// server logins to Azure Database for PostgreSQL, and checks the tokens
// clients log in with.
//
// The server checks the token once, during the login (its PGAadAuth extension
// matches the token's object ID to the role), so pgferry needs a valid token
// for every new server connection and none afterwards: a server connection
// stays usable after its token expires.
//
// NewCredential builds the azidentity credential named by Config.Credential
// (managed identity, workload identity, client secret, Azure CLI or the
// default chain). NewTokenSource wraps a credential in a TokenSource, whose
// Password method is what the pool calls per login. A TokenSource:
//
//   - caches one token per (credential, scope) and makes at most one token
//     request at a time, shared by all waiting logins;
//   - after Start, refreshes in the background ahead of expiry (at RefreshOn,
//     or max(10% of the lifetime, 5 min) before expiry, or at 2/3 of the
//     lifetime of tokens living less than 10 min), retrying failures with
//     jittered exponential backoff from 1 s to 1 min;
//   - keeps returning a cached token that has not expired while Entra or the
//     managed identity endpoint is failing;
//   - reports failures as *TokenError with a short message free of secrets,
//     and counters through Stats for the metrics package.
//
// In the other direction, Validator checks the access tokens clients send
// as passwords (client_auth = "entra"): RS256 signatures against the keys
// the tenant publishes (discovery document and key set fetched over TLS,
// refetched for unknown key ids at most once per interval), issuer,
// audience and lifetime, with accepted tokens cached by their SHA-256.
// Principal and Identity.Matches map a token's identity to the PostgreSQL
// users configured for it. The JOSE work is go-jose's; this package only
// picks keys and reads claims.
//
// Tokens and client secrets are secrets: they never appear in errors, in
// String/GoString output or in Stats.
//
// This package belongs to the auth layer: it must not import pool, router,
// metrics, configs or cmd, nor a logger or Prometheus. The pool declares the
// interface it needs (PasswordSource); configs maps TOML keys onto Config.
package entra
