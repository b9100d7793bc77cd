package entra

import (
	"fmt"
	"slices"
	"strings"
)

// Principal kinds, the prefixes of the strings ParsePrincipal reads.
const (
	// PrincipalUser matches a user token by its UPN (upn, else
	// preferred_username), case-insensitively. App-only tokens never match.
	PrincipalUser = "user"
	// PrincipalApp matches an app-only token (a service principal or a
	// managed identity) by its application (client) id: appid in v1 tokens,
	// azp in v2. User tokens never match, although they carry the id of
	// the application the user signed in with.
	PrincipalApp = "app"
	// PrincipalObject matches any token by its oid claim: a user's, a
	// service principal's or a managed identity's object id.
	PrincipalObject = "object"
	// PrincipalGroup matches any token whose groups claim lists the group's
	// object id. Entra leaves groups out of tokens of users in more than
	// 200 groups (the "overage" claim), which then do not match.
	PrincipalGroup = "group"
)

// Principal is one entry of a role's list of Entra identities.
type Principal struct {
	Kind  string // one of the Principal constants
	Value string // lower case
}

// ParsePrincipal reads "user:alice@contoso.com", "app:<client id>",
// "object:<object id>" or "group:<group object id>".
func ParsePrincipal(s string) (Principal, error) {
	kind, value, ok := strings.Cut(s, ":")
	value = strings.TrimSpace(value)
	if !ok || value == "" {
		return Principal{}, fmt.Errorf("%q is not kind:value (user:, app:, object: or group:)", s)
	}
	switch kind {
	case PrincipalUser, PrincipalApp, PrincipalObject, PrincipalGroup:
		return Principal{Kind: kind, Value: strings.ToLower(value)}, nil
	}
	return Principal{}, fmt.Errorf("%q: unknown kind %q (user, app, object or group)", s, kind)
}

// String returns kind:value.
func (p Principal) String() string { return p.Kind + ":" + p.Value }

// Matches reports whether the identity is p.
func (id *Identity) Matches(p Principal) bool {
	switch p.Kind {
	case PrincipalUser:
		return !id.App && id.UPN != "" && strings.EqualFold(id.UPN, p.Value)
	case PrincipalApp:
		return id.App && id.AppID != "" && id.AppID == p.Value
	case PrincipalObject:
		return id.ObjectID == p.Value
	case PrincipalGroup:
		return slices.ContainsFunc(id.Groups, func(g string) bool { return strings.EqualFold(g, p.Value) })
	}
	return false
}

// MatchesAny reports whether the identity is one of ps.
func (id *Identity) MatchesAny(ps []Principal) bool {
	return slices.ContainsFunc(ps, id.Matches)
}
