// PAUSE, RESUME, RECONNECT, WAIT_CLOSE, KILL, KILL_CLIENT, RELOAD and
// SHUTDOWN.

package admin

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// targets returns the pools of database db, or every pool when db is
// empty. db must be configured or have a pool (a "*" entry creates pools
// under the names clients ask for).
func (c *Console) targets(db string) (PoolSet, error) {
	ps := c.b.Pools(db)
	if db == "" {
		return ps, nil
	}
	if _, ok := c.b.Config().Databases[db]; !ok && ps.Len() == 0 {
		return nil, adminError("no such database: %s", db)
	}
	return ps, nil
}

// adminDB refuses a control command naming the console's own database
// ("pgbouncer", "pgferry"), with PgBouncer 1.25.2's words for it (admin.c:
// "cannot pause admin db: pgbouncer", ...), where it answered no such
// database; verb is the command's ("pause", "kill", "reconnect", "wait
// in"). PAUSE db and KILL db look at the pooler's pause first, as
// PgBouncer (admin.c: cf_pause_mode): while it is paused they answer
// "already suspended/paused" whatever the name, one of no database too.
func (c *Console) adminDB(verb, db string) error {
	if (verb == "pause" || verb == "kill") && db != "" && c.b.PauseState().paused() {
		return errAlreadyPaused() // (before the name's look, as PgBouncer)
	}
	if !configs.AdminDatabases[db] {
		return nil
	}
	return adminError("cannot %s admin db: %s", verb, db)
}

// errAlreadyPaused is PgBouncer's answer to PAUSE, PAUSE db, KILL and
// KILL db while the whole pooler is paused (admin.c: cf_pause_mode).
func errAlreadyPaused() error { return adminError("already suspended/paused") }

// pause stops lending server connections for db (or all) and waits until
// every lent connection came back and was closed, as PgBouncer's PAUSE
// does. The wait ends early if the admin client is killed or pgferry
// shuts down; what it paused stays paused, as in PgBouncer.
func (c *Console) pause(db string) error {
	if err := c.adminDB("pause", db); err != nil {
		return err
	}
	if _, err := c.targets(db); err != nil { // (db exists)
		return err
	}
	st := c.b.PauseState()
	if db == "" && !st.pauseAll() || db != "" && !st.pauseDBs(db) {
		return errAlreadyPaused()
	}
	// The pools again, now that the pause is marked: one made since the
	// first look started paused (PauseState.Holds), or is in this one.
	ps := c.b.Pools(db)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := ps.Pause(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if c.ss.Killed() {
			return ErrDone
		}
		if c.b.Draining() {
			return errShuttingDown
		}
	}
}

// resume ends a pause as PgBouncer's RESUME does: RESUME ends PAUSE and
// leaves the databases paused on their own (PAUSE db, KILL) paused;
// RESUME db ends those. One difference, deliberate: RESUME with the
// pooler not paused but databases paused on their own (after a KILL
// without a database, say) resumes them, where PgBouncer answers "pooler
// is not paused/suspended" and wants RESUME db for each.
func (c *Console) resume(db string) error {
	if configs.AdminDatabases[db] {
		return adminError("database %s is not paused", db) // (PgBouncer's: it never is)
	}
	ps, err := c.targets(db)
	if err != nil {
		return err
	}
	st := c.b.PauseState()
	if db != "" {
		was, global := st.resumeDB(db)
		if !was {
			return adminError("database %s is not paused", db)
		}
		if !global {
			c.b.Pools(db).Resume() // (with one made since targets)
		}
		return nil
	}
	global, kept := st.resumeAll()
	if !global {
		if len(kept) == 0 && ps.Paused() == 0 {
			return adminError("pooler is not paused/suspended")
		}
		ps.Resume()
		return nil
	}
	names := map[string]bool{}
	for _, p := range c.b.Snapshot().Pools {
		names[p.Database] = true
	}
	for name := range names {
		if !kept[name] {
			c.b.Pools(name).Resume()
		}
	}
	return nil
}

func (c *Console) reconnect(db string) error {
	if err := c.adminDB("reconnect", db); err != nil {
		return err
	}
	ps, err := c.targets(db)
	if err != nil {
		return err
	}
	ps.Reconnect()
	return nil
}

// waitClose blocks until no server connection of db (or of any database)
// predates a RECONNECT, nor any login begun before it (its connection is
// closed when it ends), so an operator can switch the server over and know
// when every connection to the old one is gone. It gives up if pgferry
// shuts down.
func (c *Console) waitClose(db string) error {
	if err := c.adminDB("wait in", db); err != nil {
		return err
	}
	ps, err := c.targets(db)
	if err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if ps.CloseNeeded() == 0 {
			return nil
		}
		if c.b.Draining() {
			return adminError("pgferry is shutting down")
		}
		<-t.C
	}
}

// killClient ends the client whose ptr (as SHOW CLIENTS lists it) is arg.
func (c *Console) killClient(arg string) error {
	if arg == "" {
		return adminError("a client (its ptr from SHOW CLIENTS) is required")
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(arg, "0x"), 16, 64)
	if err != nil {
		return adminError("invalid client pointer %s", arg)
	}
	if !c.b.KillClient(id) {
		return adminError("client %s not found", arg)
	}
	c.log.Info("admin KILL_CLIENT", zap.Uint64("killed_conn_id", id))
	return nil
}

// kill drops every client of db and its server connections now; no db is
// every database but the console's, as in PgBouncer 1.23+ (1.18 refused
// it). As in PgBouncer (admin.c admin_cmd_kill), the databases killed
// stay paused until RESUME, and a KILL while the whole pooler is paused
// (PAUSE, done or still waiting for servers) is refused and kills nobody.
func (c *Console) kill(db string) error {
	if err := c.adminDB("kill", db); err != nil {
		return err
	}
	if _, err := c.targets(db); err != nil { // (db exists)
		return err
	}
	dbs := []string{db}
	if db == "" {
		dbs = dbs[:0]
		for _, p := range c.b.Snapshot().Pools {
			dbs = append(dbs, p.Database)
		}
	}
	if !c.b.PauseState().pauseDBs(dbs...) {
		return errAlreadyPaused()
	}
	// Mark the pools paused without waiting for them to drain: the
	// clients holding their connections are about to go. The pools again,
	// now that the pause is marked (see pause).
	done, cancel := context.WithCancel(context.Background())
	cancel()
	ps := c.b.Pools(db)
	ps.Pause(done)
	ps.Reconnect()
	n := c.b.KillClients(db)
	c.log.Info("admin KILL", zap.String("target_database", db), zap.Int("clients_killed", n))
	return nil
}

// errReloadFailed is RELOAD's answer to any failure; the reason goes to
// the log, as in PgBouncer.
var errReloadFailed = protocol.NewError(protocol.SQLStateConfigFileError, "RELOAD failed, see logs for additional details")

func (c *Console) reload() error {
	err := c.b.Reload()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoAction):
		c.log.Error("admin RELOAD: no reload action is configured")
	default:
		c.log.Error("admin RELOAD failed", zap.Error(err))
	}
	return errReloadFailed
}

func (c *Console) shutdown() error {
	if err := c.b.Shutdown(); err != nil {
		return protocol.NewError(protocol.SQLStateFeatureNotSupported, "SHUTDOWN is not available: no shutdown action is configured")
	}
	return nil
}
