package configs

import "reflect"

// restartOnlyKeys are the settings a reload cannot apply: they shape the
// listening sockets, which are created once at startup.
var restartOnlyKeys = []string{
	"listen_addr", "listen_port", "unix_socket_dir", "so_reuseport", "metrics_listen", "debug_listen",
	// The logger is built once at start; log_level changes live.
	"log_format",
	// The file watcher is set up once at start.
	"watch_config",
}

// Database returns the entry clients reach by connecting to database name,
// as [Config.LookupDatabase] does, without saying whether it was reached
// through a readonly_alias.
func (c *Config) Database(name string) (Database, bool) {
	db, _, ok := c.LookupDatabase(name)
	return db, ok
}

// LookupDatabase resolves the database name a client asked for. It returns,
// in order of precedence: the entry of that name; the entry whose
// readonly_alias is name, with readOnly set (the session should read from
// replicas); or the "*" fallback entry, with DBName set to name unless the
// entry names a fixed database. ok is false when nothing matches or name is
// empty.
//
// The result is a copy, but its Replicas slice is shared with c and must not
// be modified. LookupDatabase is safe for concurrent use as long as c is not
// modified, which holds for a loaded Config.
func (c *Config) LookupDatabase(name string) (db Database, readOnly bool, ok bool) {
	if name == "" {
		return Database{}, false, false
	}
	if db, ok := c.Databases[name]; ok {
		return db, false, true
	}
	// Validate guarantees aliases are unique and never shadow an entry.
	for _, db := range c.Databases {
		if db.ReadOnlyAlias == name {
			return db, true, true
		}
	}
	if db, ok := c.Databases[wildcardDatabase]; ok {
		if db.DBName == "" {
			db.DBName = name
		}
		return db, false, true
	}
	return Database{}, false, false
}

// RestartOnlyChanges returns the keys whose values differ between old and
// new but cannot change without a restart (listen_addr, listen_port,
// unix_socket_dir, so_reuseport, metrics_listen, debug_listen), in that
// order. A reload should reject new, or apply it without these settings and
// warn, when the result is not empty. It returns nil if either is nil.
func RestartOnlyChanges(old, new *Config) []string {
	if old == nil || new == nil {
		return nil
	}
	var changed []string
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	for _, key := range restartOnlyKeys {
		of, _ := fieldByKey(ov, key)
		nf, _ := fieldByKey(nv, key)
		if !reflect.DeepEqual(of.Interface(), nf.Interface()) {
			changed = append(changed, key)
		}
	}
	return changed
}
