// PauseState: what PAUSE, KILL and RESUME have paused, shared by every
// console session.

package admin

import (
	"maps"
	"sync"
)

// PauseState records what the console has paused, as PgBouncer keeps it
// (admin.c): the whole pooler (PAUSE without a database, its cf_pause_mode)
// and each database paused on its own (PAUSE db, KILL: its db_paused). The
// pools' own paused flags do the holding; PauseState says why they are
// set, which decides what KILL, PAUSE and RESUME may do next. The zero
// value is ready to use and pauses nothing; it is safe for concurrent use.
// Backend.PauseState returns one per pooler.
type PauseState struct {
	mu     sync.Mutex // guards the fields below
	global bool
	dbs    map[string]bool
}

// pauseAll marks the whole pooler paused, unless it is already: PgBouncer
// marks it before the wait for the servers, so a KILL during the wait
// finds it paused too.
func (p *PauseState) pauseAll() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.global {
		return false
	}
	p.global = true
	return true
}

// pauseDBs marks databases paused on their own, unless the whole pooler
// is paused.
func (p *PauseState) pauseDBs(dbs ...string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.global {
		return false
	}
	if p.dbs == nil {
		p.dbs = make(map[string]bool)
	}
	for _, db := range dbs {
		p.dbs[db] = true
	}
	return true
}

// resumeAll ends the pause of the whole pooler. It returns whether the
// pooler was paused and the databases still paused on their own, whose
// pools stay paused. With the pooler not paused, it ends the databases'
// pauses too and returns them, which PgBouncer refuses instead ("pooler is
// not paused/suspended"): see Console.resume.
func (p *PauseState) resumeAll() (wasGlobal bool, dbs map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.global {
		p.global = false
		return true, maps.Clone(p.dbs)
	}
	dbs, p.dbs = p.dbs, nil
	return false, dbs
}

// resumeDB ends database db's own pause. It returns whether db was paused
// on its own, and whether the whole pooler still is (its pools then stay
// paused).
func (p *PauseState) resumeDB(db string) (was, global bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was = p.dbs[db]
	delete(p.dbs, db)
	return was, p.global
}

// Holds reports whether a pool of database db made now must start paused:
// the whole pooler is paused, or db is on its own. PgBouncer holds a new
// client of a paused pooler or database whether or not its pool existed
// before (its pause is the pooler's and the database's, not the pools').
// A caller that registers the pool under a lock that PAUSE's look at the
// pools also takes (Backend.Pools, after PAUSE marked this state) cannot
// miss a pause: either the pool is in that look, or it sees the mark.
func (p *PauseState) Holds(db string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.global || p.dbs[db]
}

// paused reports whether the whole pooler is paused.
func (p *PauseState) paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.global
}

// dbPaused reports whether database db is paused on its own (PAUSE db,
// KILL db), PgBouncer's db_paused: SHOW DATABASES' paused.
func (p *PauseState) dbPaused(db string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dbs[db]
}
