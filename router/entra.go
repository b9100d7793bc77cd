package router

import (
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// entraClients is what client logins with Entra ID tokens need: the
// validator and each PostgreSQL user's identities. Immutable once built.
type entraClients struct {
	validator *entra.Validator
	roles     map[string][]entra.Principal
	// settings fingerprints the [client_entra] the validator was built
	// from, so a reload that leaves it alone keeps its keys and cache.
	settings string
}

// newEntraClients builds the Entra client login state for cfg, reusing
// prev's validator if [client_entra] is unchanged; nil if no client logs
// in with Entra.
func newEntraClients(cfg *configs.Config, prev *entraClients, client *http.Client) (*entraClients, error) {
	if !cfg.EntraClients() {
		return nil, nil
	}
	ce := cfg.ClientEntra
	ec := &entraClients{roles: make(map[string][]entra.Principal, len(ce.Roles))}
	for role, list := range ce.Roles {
		for _, s := range list {
			p, err := entra.ParsePrincipal(s)
			if err != nil {
				return nil, fmt.Errorf("client_entra.roles.%s: %w", role, err)
			}
			ec.roles[role] = append(ec.roles[role], p)
		}
	}
	ec.settings = fmt.Sprint(ce.Tenants, ce.Audiences, ce.AuthorityHost, ce.V1IssuerHost, ce.ClockSkew, ce.KeyRefreshInterval)
	if prev != nil && prev.settings == ec.settings {
		ec.validator = prev.validator
		return ec, nil
	}
	v, err := entra.NewValidator(entra.ValidatorConfig{
		Tenants:            ce.Tenants,
		Audiences:          ce.Audiences,
		AuthorityHost:      ce.AuthorityHost,
		V1IssuerHost:       ce.V1IssuerHost,
		ClockSkew:          ce.ClockSkew.Std(),
		KeyRefreshInterval: ce.KeyRefreshInterval.Std(),
		HTTPClient:         client,
	})
	if err != nil {
		return nil, fmt.Errorf("client_entra: %w", err)
	}
	ec.validator = v
	return ec, nil
}

// clientAuthEntra reports whether the client logs in with an Entra token:
// its database entry or its user says client_auth = "entra".
func (ss *session) clientAuthEntra(cfg *configs.Config) bool {
	if u, ok := cfg.Users[ss.user]; ok && u.ClientAuth == "entra" {
		return true
	}
	db, _, ok := cfg.LookupDatabase(ss.database)
	return ok && db.ClientAuth == "entra"
}

// entraLogin asks for the client's password, which must be an Entra ID
// access token whose identity is listed for the user name the client
// gave. The client is told only that authentication failed; the log says
// why (never the token).
func (ss *session) entraLogin(cfg *configs.Config) error {
	ec := ss.srv.entra.Load()
	fail := func(reason string, fields ...zap.Field) error {
		ss.srv.reject("auth")
		ss.srv.throttle.failed(ss.peer)
		ss.logger().Info("entra token refused", append(fields, zap.String("reason", reason))...)
		return protocol.Fatal(protocol.SQLStateInvalidAuthorization, fmt.Sprintf("Entra ID authentication failed for user %q", ss.user))
	}
	if !ss.tls || ec == nil {
		// Configuration checks make both impossible; refuse rather than
		// ask for a bearer token in clear text.
		return fail("no TLS or no [client_entra]")
	}
	if err := ss.sendAuth(authCleartextPassword, nil); err != nil {
		return err
	}
	token, err := ss.readPassword()
	if err != nil {
		return err
	}
	// The socket deadline (client_login_timeout) bounds the exchange; this
	// bounds waiting on a check another login is making.
	ctx, cancel := ss.loginContext(entraCheckTimeout(cfg)) // (and a kill, shutdown's deadline)
	defer cancel()
	id, err := ec.validator.Validate(ctx, token)
	if err != nil {
		if k := ss.killed(); k != nil {
			return k
		}
		return fail(err.Error())
	}
	if !id.MatchesAny(ec.roles[ss.user]) {
		return fail("identity not listed in client_entra.roles for this user", zap.Stringer("identity", id))
	}
	ss.srv.throttle.succeeded(ss.peer)
	if ss.debugEnabled() {
		ss.logger().Debug("entra token accepted", zap.Stringer("identity", id))
	}
	ss.queueAuthOK()
	return nil
}

func entraCheckTimeout(cfg *configs.Config) time.Duration {
	if d := cfg.ClientLoginTimeout.Std(); d > 0 {
		return d
	}
	return time.Minute
}

// EntraStats returns the counters of the client Entra token validator, and
// false when no client logs in with Entra.
func (s *Server) EntraStats() (entra.ValidatorStats, bool) {
	ec := s.entra.Load()
	if ec == nil {
		return entra.ValidatorStats{}, false
	}
	return ec.validator.Stats(), true
}
