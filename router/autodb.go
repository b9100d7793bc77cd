// Pools of databases the wildcard entry resolves.

package router

import "github.com/pgferry/pgferry/configs"

// PoolForgetter is implemented by Hooks that keep something per pool
// (metric series): PoolForgotten is called when the pool of (database,
// user) is dropped for good, not replaced by another.
type PoolForgetter interface {
	PoolForgotten(database, user string)
}

// forgetMissingDatabase drops e, a pool of a database name the wildcard
// entry ("*") resolved, once its server said the database does not exist
// (3D000) and it holds no server connection and no waiting client.
// Otherwise every name a client tries would keep a pool, its goroutines,
// its SHOW POOLS row and its metric series for good: a client could grow
// them without bound by trying names. A client that names the database
// again gets a new pool (and the server's answer afresh).
func (s *Server) forgetMissingDatabase(e *poolEntry) {
	if e == nil || !resolvedByWildcard(s.cfg.Load(), e.dbName) {
		return
	}
	if st := e.pool.Stat(); st.Total != 0 || st.Waiting != 0 {
		return
	}
	k := e.key()
	s.mu.Lock()
	if s.pools[k] != e {
		s.mu.Unlock()
		return
	}
	delete(s.pools, k)
	s.wg.Add(1)
	s.mu.Unlock()
	if h, ok := s.opts.Hooks.(PoolForgetter); ok {
		h.PoolForgotten(k.db, k.user)
	}
	go func() { defer s.wg.Done(); e.close() }()
}

// resolvedByWildcard reports whether name is no database entry nor
// read-only alias of cfg, so that only the wildcard entry serves it.
func resolvedByWildcard(cfg *configs.Config, name string) bool {
	if _, ok := cfg.Databases[name]; ok {
		return false
	}
	for _, db := range cfg.Databases {
		if db.ReadOnlyAlias == name {
			return false
		}
	}
	return true
}
