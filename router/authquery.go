// auth_query: users missing from auth_file are looked up on the server, as
// PgBouncer does, over a pool of auth_user's connections.

package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// authQueryTTL is how long a looked-up secret (or a user found missing) is
// kept: a burst of logins costs one query, and a changed password or a
// dropped role takes effect soon.
const authQueryTTL = 10 * time.Second

// authQueryTimeout bounds a lookup: the wait for an auth_user connection
// and the query.
const authQueryTimeout = 10 * time.Second

// authQueryCache holds auth_query results by user. It is safe for
// concurrent use.
type authQueryCache struct {
	// mu guards m; no I/O runs under it.
	mu sync.Mutex
	m  map[string]authQueryResult
}

type authQueryResult struct {
	cred  auth.Credential
	known bool
	until time.Time
}

func (c *authQueryCache) get(user string, now time.Time) (authQueryResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[user]
	if !ok || now.After(r.until) {
		return authQueryResult{}, false
	}
	return r, true
}

// put records r for user. The cache holds at most maxAuthQueryCache users:
// clients choose the names they look up, unknown ones included, so a
// client trying made-up names must not grow it without bound. When full,
// expired results go first, then any, down to nine tenths of the bound so
// the next puts need no clean-up (a dropped result costs one more query).
func (c *authQueryCache) put(user string, r authQueryResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]authQueryResult)
	}
	if _, ok := c.m[user]; !ok && len(c.m) >= maxAuthQueryCache {
		now := time.Now()
		for u, old := range c.m {
			if now.After(old.until) {
				delete(c.m, u)
			}
		}
		for u := range c.m {
			if len(c.m) < maxAuthQueryCache*9/10 {
				break
			}
			delete(c.m, u)
		}
	}
	c.m[user] = r
}

// maxAuthQueryCache bounds the users whose auth_query results are kept.
const maxAuthQueryCache = 10_000

// errAuthQuery marks a lookup that failed (the server, auth_user's login,
// the query), as opposed to a user found missing.
var errAuthQuery = errors.New("auth_query lookup failed")

// authQueryConfigured reports whether lookupUser would run auth_query for
// a client of database (auth_user set for it, or for all).
func authQueryConfigured(cfg *configs.Config, database string) bool {
	db, _, ok := cfg.LookupDatabase(database)
	return ok && (db.AuthUser != "" || cfg.AuthUser != "")
}

// lookupUser finds user's secret with auth_query when database (the one
// the client asked for) or the configuration sets auth_user. known is
// false for a user the query does not return, or whose secret is NULL
// (expired, no password): to the client that is a wrong password.
func (s *Server) lookupUser(cfg *configs.Config, database, user string) (auth.Credential, bool, error) {
	db, _, ok := cfg.LookupDatabase(database)
	if !ok {
		return auth.Credential{}, false, nil // "no such database" comes later
	}
	authUser := db.AuthUser
	if authUser == "" {
		authUser = cfg.AuthUser
	}
	if authUser == "" {
		return auth.Credential{}, false, nil
	}
	now := time.Now()
	if r, ok := s.authQueries.get(user, now); ok {
		return r.cred, r.known, nil
	}
	dbName := cfg.AuthDBName
	if dbName == "" {
		dbName = database
	}
	adb, _, ok := cfg.LookupDatabase(dbName)
	if !ok {
		return auth.Credential{}, false, fmt.Errorf("%w: auth_dbname %q is not a configured database", errAuthQuery, dbName)
	}
	entry, err := s.poolFor(cfg, dbName, adb, authUser, "")
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: %w", errAuthQuery, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), authQueryTimeout)
	defer cancel()
	sc, err := entry.pool.Acquire(ctx)
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: connecting as auth_user %q: %w", errAuthQuery, authUser, err)
	}
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	sql := strings.ReplaceAll(cfg.AuthQuery, "$1", quoteLiteral(user))
	var stored string
	found := false
	sc.Conn.SetDeadline(time.Now().Add(authQueryTimeout))
	_, err = protocol.Exec(sc.Rd, sc.Wr, sql, func(typ byte, frame []byte) error {
		if typ != protocol.MsgDataRow || found {
			return nil
		}
		var buf [2]protocol.Column
		cols, err := protocol.ParseDataRow(protocol.Body(frame), buf[:0])
		if err != nil || len(cols) != 2 {
			return fmt.Errorf("auth_query must return two columns (name, secret): %w", err)
		}
		found = !cols[1].Null
		stored = string(cols[1].Value)
		return nil
	})
	sc.Conn.SetDeadline(time.Time{})
	var se *protocol.ServerError
	switch {
	case err == nil || errors.As(err, &se):
		entry.pool.Release(sc) // idle after its ReadyForQuery
	default:
		entry.pool.Destroy(sc)
	}
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: %w", errAuthQuery, err)
	}
	user = strings.Clone(user) // it may be a substring of a startup packet: the cache keeps it
	r := authQueryResult{until: now.Add(authQueryTTL)}
	if found && stored != "" {
		if cred, err := auth.ParseCredential(user, stored); err == nil {
			r.cred, r.known = cred, true
		}
	}
	s.authQueries.put(user, r)
	return r.cred, r.known, nil
}

// quoteLiteral quotes s as an escape string literal (E'...'), which means
// the same whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "E'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
