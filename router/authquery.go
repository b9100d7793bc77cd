// auth_query: users missing from auth_file are looked up on the server, as
// PgBouncer does, over a pool of auth_user's connections.

package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unique"

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

// authQueryCache holds auth_query results by lookup (authQueryKey). It is
// safe for concurrent use.
type authQueryCache struct {
	// mu guards m; no I/O runs under it.
	mu sync.Mutex
	m  map[string]authQueryResult
}

// authQueryKey names one lookup: the database auth_query runs in
// (auth_dbname, else the client's), auth_user, and the user looked up.
// The user alone is not enough: databases may sit on different servers, or
// read the secrets through a function of their own (PgBouncer's documented
// setup), and auth_user may differ per database, so one name may have
// another secret, or none, in each. The lengths keep the parts apart.
func authQueryKey(database, authUser, user string) string {
	return strconv.Itoa(len(database)) + ":" + database + strconv.Itoa(len(authUser)) + ":" + authUser + user
}

type authQueryResult struct {
	cred  auth.Credential
	known bool
	until time.Time
	// cfg is the configuration the lookup ran with: a reload may change
	// the servers, auth_user or auth_query, so a result is used only with
	// the configuration that found it.
	cfg *configs.Config
}

func (c *authQueryCache) get(key string, now time.Time) (authQueryResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[key]
	if !ok || now.After(r.until) {
		return authQueryResult{}, false
	}
	return r, true
}

// put records r for key. The cache holds at most maxAuthQueryCache
// lookups: clients choose the names they look up, unknown ones included,
// so a client trying made-up names must not grow it without bound. When
// full, expired results go first, then any, down to nine tenths of the
// bound so the next puts need no clean-up (a dropped result costs one more
// query).
func (c *authQueryCache) put(key string, r authQueryResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]authQueryResult)
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= maxAuthQueryCache {
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
	c.m[key] = r
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

// authQuerySource returns where auth_query looks up the users of a
// client's database: the database it runs in (auth_dbname, else the
// client's, or for a read-only alias the database it reads, whose pools it
// shares) and auth_user (the database entry's, else the global one; ""
// when neither is set).
func authQuerySource(cfg *configs.Config, database string) (dbName, authUser string) {
	db, readOnly, ok := cfg.LookupDatabase(database)
	if !ok {
		return "", ""
	}
	authUser = db.AuthUser
	if authUser == "" {
		authUser = cfg.AuthUser
	}
	switch dbName = cfg.AuthDBName; {
	case dbName != "":
	case readOnly:
		dbName = aliasTarget(cfg, database)
	default:
		dbName = database
	}
	return dbName, authUser
}

// cachedAuthQuery returns what auth_query found for user, a client of
// database, if it was looked up with cfg and is still fresh.
func (s *Server) cachedAuthQuery(cfg *configs.Config, database, user string) (authQueryResult, bool) {
	dbName, authUser := authQuerySource(cfg, database)
	if authUser == "" {
		return authQueryResult{}, false
	}
	r, ok := s.authQueries.get(authQueryKey(dbName, authUser, user), time.Now())
	return r, ok && r.cfg == cfg
}

// lookupUser finds user's secret with auth_query when database (the one
// the client asked for) or the configuration sets auth_user. known is
// false for a user the query does not return, or whose secret is NULL
// (expired, no password): to the client that is a wrong password. The
// lookup (the wait for an auth_user connection and the query) ends when
// ctx does, or after authQueryTimeout: the login's, which shutdown's
// deadline ends (Server.cut).
func (s *Server) lookupUser(ctx context.Context, cfg *configs.Config, database, user string) (auth.Credential, bool, error) {
	dbName, authUser := authQuerySource(cfg, database)
	if authUser == "" {
		return auth.Credential{}, false, nil // or "no such database", which comes later
	}
	now := time.Now()
	key := authQueryKey(dbName, authUser, user)
	if r, ok := s.authQueries.get(key, now); ok && r.cfg == cfg {
		return r.cred, r.known, nil
	}
	adb, _, ok := cfg.LookupDatabase(dbName)
	if !ok {
		return auth.Credential{}, false, fmt.Errorf("%w: auth_dbname %q is not a configured database", errAuthQuery, dbName)
	}
	entry, err := s.poolFor(cfg, dbName, adb, authUser, "")
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: %w", errAuthQuery, err)
	}
	ctx, cancel := context.WithTimeout(ctx, authQueryTimeout)
	defer cancel()
	sc, err := entry.pool.Acquire(ctx)
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: connecting as auth_user %q: %w", errAuthQuery, authUser, err)
	}
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	var stored string
	found := false
	// The query's reads and writes end with ctx too (a past deadline, as
	// pgx's ctxwatch does): a query that runs on is not waited for past
	// shutdown's deadline. The server goes then, its state unknown.
	cut := make(chan struct{})
	stopWatch := context.AfterFunc(ctx, func() {
		sc.Conn.SetDeadline(pastDeadline)
		close(cut)
	})
	// The server may hold the client_encoding the pool's last client left
	// there (a loan replays its client's parameters, this lookup takes a
	// server as it is): the user name, UTF-8 as every startup packet pgferry
	// takes, is read in UTF8. The change is recorded for the next loan.
	if enc := sc.Params[encodingName]; enc != "UTF8" {
		if _, err = protocol.Exec(sc.Rd, sc.Wr, "SET client_encoding TO 'UTF8'", nil); err == nil {
			sc.Params[encodingName] = "UTF8"
			sc.ParamsKey = unique.Handle[string]{}
		}
	}
	// The user name goes as the statement's parameter, as PgBouncer sends
	// it, never as SQL text.
	if err == nil {
		_, err = protocol.ExecParams(sc.Rd, sc.Wr, cfg.AuthQuery, []string{user}, func(typ byte, frame []byte) error {
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
	}
	interrupted := !stopWatch()
	if interrupted {
		<-cut // (its deadline set: none is left for the server's next borrower)
	}
	sc.Conn.SetDeadline(time.Time{})
	var se *protocol.ServerError
	switch {
	case !interrupted && (err == nil || errors.As(err, &se)):
		entry.pool.Release(sc) // idle after its ReadyForQuery
	default:
		entry.pool.Destroy(sc)
	}
	if err != nil {
		return auth.Credential{}, false, fmt.Errorf("%w: %w", errAuthQuery, err)
	}
	r := authQueryResult{until: now.Add(authQueryTTL), cfg: cfg}
	if found && stored != "" {
		if cred, err := auth.ParseCredential(user, stored); err == nil {
			r.cred, r.known = cred, true
		}
	}
	s.authQueries.put(key, r) // (a new string: no startup packet is kept alive)
	return r.cred, r.known, nil
}
