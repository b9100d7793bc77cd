package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// Sections of pgbouncer.ini (PgBouncer doc/config.md).
const (
	iniSectionPgBouncer = "pgbouncer"
	iniSectionDatabases = "databases"
	iniSectionUsers     = "users"
	iniSectionPeers     = "peers"
)

// iniLookupKeys are the settings PgBouncer reads as one of a set of names,
// case-insensitively (libusual cfparser.c cf_set_lookup: pool_mode = Session
// is session), in [pgbouncer], [databases] and [users] lines alike. The
// ini reader lowercases their values; pgferry's TOML keeps them exact.
var iniLookupKeys = map[string]bool{
	"auth_type": true, "pool_mode": true, "client_tls_sslmode": true, "server_tls_sslmode": true,
}

// iniInheritBelowZero are the numeric keys of [databases] and [users]
// lines that PgBouncer 1.25 reads as not set when negative (loader.c starts
// each at -1; server.c's pool_pool_size, database_min_pool_size,
// pool_res_pool_size, database_max_connections, user_max_connections take
// the global value below 0; a [users] line's pool_size and
// reserve_pool_size likewise give way to the database's below 0), so
// "pool_size=-1" is the same as leaving the key out. Zero is a value for
// the pool sizes (min_pool_size=0 keeps no
// server open whatever the global says) and means "not set" for the
// connection caps (PgBouncer takes the global one at 0 too; so does
// pgferry's fillDerived).
var iniInheritBelowZero = map[string]bool{
	"pool_size": true, "min_pool_size": true, "reserve_pool": true, "reserve_pool_size": true,
	"max_db_connections": true, "max_user_connections": true,
}

// belowZero reports whether f, an integer or an optional one, holds a
// negative number.
func belowZero(f reflect.Value) bool {
	if f.Kind() == reflect.Pointer {
		if f.IsNil() {
			return false
		}
		f = f.Elem()
	}
	return f.CanInt() && f.Int() < 0
}

// iniUnsupportedAuthTypes are PgBouncer auth_type values pgferry does not
// implement.
var iniUnsupportedAuthTypes = map[string]bool{
	"any": true, "pam": true, "ldap": true, "peer": true,
}

// maxINIInclude bounds %include nesting, as PgBouncer's cfparser.c does
// (MAX_INCLUDE), which also ends a file that includes itself.
const maxINIInclude = 10

// maxINIFile bounds a file read through %include.
const maxINIFile = 16 << 20

// decodeINI reads a PgBouncer config file into c, which holds the defaults.
//
// Keys of [pgbouncer] map onto the top-level settings of the same name;
// [databases] lines ("name = host=... port=...", values in single quotes as
// PgBouncer's loader.c reads them) onto Databases and [users] lines onto
// Users. Keys pgferry does not know are reported as warnings, not errors, so
// an existing pgbouncer.ini loads as is. Two PgBouncer defaults are kept
// where pgferry's differ in a way that would change behaviour: auth_type
// defaults to "md5" when the file does not set it, so existing md5 userlists
// keep working, and an empty listen_addr (PgBouncer: unix socket only) keeps
// pgferry's 127.0.0.1 with a warning. pool_mode keeps pgferry's transaction,
// with a warning when a database takes it from the unset global (PgBouncer:
// session). PgBouncer's unix_socket_dir default (/tmp) is not assumed.
//
// "%include file" lines read file in place, as PgBouncer does: its lines
// go on in the section in force, and the section it ends in stays in force
// after it. A relative path is taken from baseDir (the directory of the
// main file; the working directory when baseDir is ""), for every file
// however deep, as PgBouncer takes every one from its working directory.
// The files read are recorded in c.Included, so that they are watched.
//
// dbSet receives, per database entry, the keys its line sets (under their
// TOML names: reserve_pool_size is reserve_pool), so that an explicit value
// is kept where the global one would fill in a missing key (fillDerived).
func decodeINI(data []byte, c *Config, globalsSet map[string]bool, dbSet map[string]map[string]bool, baseDir string) ([]string, error) {
	r := &iniReader{c: c, globalsSet: globalsSet, dbSet: dbSet, baseDir: baseDir}
	r.read("", data, 0)
	if !r.authTypeSet {
		c.AuthType = "md5"
	}
	if !globalsSet["pool_mode"] {
		for _, db := range c.Databases {
			if db.PoolMode == "" {
				r.warnings = append(r.warnings, "pgbouncer.pool_mode is not set: pgferry pools by transaction, where PgBouncer's default is session; "+
					"set pool_mode = session to keep PgBouncer's behaviour, or pool_mode = transaction to silence this "+
					"(a client using session state is pinned to its server: docs/transaction-mode.md)")
				break
			}
		}
	}
	return r.warnings, errors.Join(r.errs...)
}

// iniReader is the state of one decodeINI, carried across %include.
type iniReader struct {
	c           *Config
	globalsSet  map[string]bool
	dbSet       map[string]map[string]bool
	baseDir     string
	warnings    []string
	errs        []error
	section     string
	authTypeSet bool
	skipSection bool
}

// read reads the lines of one file: name is "" for the main file, else the
// included file's path as written, which prefixes its errors.
func (r *iniReader) read(name string, data []byte, depth int) {
	c := r.c
	warnf := func(format string, args ...any) { r.warnings = append(r.warnings, fmt.Sprintf(format, args...)) }
	errf := func(lineNo int, format string, args ...any) {
		where := fmt.Sprintf("line %d", lineNo)
		if name != "" {
			where = name + " " + where
		}
		r.errs = append(r.errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
	}

	for i, line := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		if !utf8.ValidString(line) {
			// TOML, and PostgreSQL's own settings, are UTF-8: refuse
			// rather than carry bytes that cannot be written back.
			errf(lineNo, "not valid UTF-8")
			continue
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "%include"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			r.include(strings.TrimSpace(rest), depth, func(format string, args ...any) { errf(lineNo, format, args...) })
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				errf(lineNo, "malformed section header")
				continue
			}
			r.section = strings.ToLower(strings.TrimSpace(line[1 : len(line)-1]))
			r.skipSection = false
			switch r.section {
			case iniSectionPgBouncer, iniSectionDatabases, iniSectionUsers, iniSectionPeers:
			default:
				warnf("section [%s] is not supported by pgferry and is ignored", r.section)
				r.skipSection = true
			}
			continue
		}
		key, value, ok := splitINILine(line)
		if !ok {
			// The line is not echoed: it may hold a password.
			errf(lineNo, "expected \"key = value\"")
			continue
		}
		if r.skipSection {
			continue
		}
		switch r.section {
		case "":
			errf(lineNo, "key %q outside of a section", key)
		case iniSectionPgBouncer:
			key = strings.ToLower(key)
			if key == "auth_type" {
				r.authTypeSet = true
			}
			r.globalsSet[key] = true
			w, err := setINIGlobal(c, key, value)
			if w != "" {
				r.warnings = append(r.warnings, w)
			}
			if err != nil {
				r.errs = append(r.errs, err)
			}
		case iniSectionDatabases:
			db := Database{}
			set := map[string]bool{}
			w, err := setINIPairs(reflect.ValueOf(&db).Elem(), "databases."+quoteKey(key), value, map[string]string{
				// PgBouncer 1.24 renamed the per-database reserve_pool.
				"reserve_pool_size": "reserve_pool",
			}, set)
			r.warnings = append(r.warnings, w...)
			if err != nil {
				r.errs = append(r.errs, err)
				continue
			}
			if strings.Contains(db.Host, ",") {
				// PgBouncer config.md, host and load_balance_hosts.
				warnf("databases.%s.host: pgferry takes a host list for failover: each new server connection goes to the first host "+
					"that accepts writes; PgBouncer spreads new connections over all the hosts in turn (load_balance_hosts, "+
					"round-robin by default) whether they accept writes or not. List read replicas under replicas (TOML) instead", quoteKey(key))
			}
			c.Databases[key] = db
			// A later line for the same name replaces the entry whole,
			// as PgBouncer's parse_database does.
			r.dbSet[key] = set
		case iniSectionUsers:
			u := User{}
			w, err := setINIPairs(reflect.ValueOf(&u).Elem(), "users."+quoteKey(key), value, nil, map[string]bool{})
			r.warnings = append(r.warnings, w...)
			if err != nil {
				r.errs = append(r.errs, err)
				continue
			}
			c.Users[key] = u
		case iniSectionPeers:
			peer := Peer{}
			w, err := setINIPairs(reflect.ValueOf(&peer).Elem(), "peers."+quoteKey(key), value, nil, map[string]bool{})
			r.warnings = append(r.warnings, w...)
			if err != nil {
				r.errs = append(r.errs, err)
				continue
			}
			if c.Peers == nil {
				c.Peers = map[string]Peer{}
			}
			c.Peers[key] = peer
		}
	}
}

// include reads the file an "%include path" line names, in place. errf
// reports a problem at the %include line.
func (r *iniReader) include(path string, depth int, errf func(format string, args ...any)) {
	if path == "" {
		errf("%%include without a file")
		return
	}
	if depth+1 > maxINIInclude {
		errf("%%include %s: nested more than %d deep", path, maxINIInclude)
		return
	}
	full := resolvePath(r.baseDir, path)
	// Only a regular file, read whole: not a device or a pipe.
	fi, err := os.Stat(full)
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	} else if err == nil && fi.Size() > maxINIFile {
		err = fmt.Errorf("larger than %d bytes", maxINIFile)
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(full)
	}
	if err != nil {
		errf("%%include %s: %v", path, err)
		return
	}
	if abs, err := filepath.Abs(full); err == nil {
		full = abs
	}
	if !slices.Contains(r.c.Included, full) {
		r.c.Included = append(r.c.Included, full)
	}
	r.read(path, data, depth+1)
}

// splitINILine splits a trimmed "key = value" line. A key in single quotes
// is taken as it stands up to the next quote, '=' and ';' included, as
// PgBouncer's cfparser.c reads it (a name with blanks: 'my db' = ...); an
// empty or unterminated one is malformed there too. A key in double quotes
// (pgferry's own, which PgBouncer refuses) has "" for a quote.
func splitINILine(line string) (key, value string, ok bool) {
	if line[0] == '\'' {
		end := strings.IndexByte(line[1:], '\'')
		if end <= 0 {
			return "", "", false
		}
		key = line[1 : 1+end]
		rest := strings.TrimLeft(line[2+end:], " \t")
		if rest == "" || rest[0] != '=' {
			return "", "", false
		}
		return key, strings.TrimSpace(rest[1:]), true
	}
	rawKey, value, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", false
	}
	return unquoteININame(strings.TrimSpace(rawKey)), strings.TrimSpace(value), true
}

// unquoteININame strips the double quotes pgferry allows around database
// and user names.
func unquoteININame(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

// setINIGlobal applies one [pgbouncer] key to c. It returns a warning for
// keys pgferry ignores and an error naming the key for bad values.
func setINIGlobal(c *Config, key, value string) (string, error) {
	if iniLookupKeys[key] {
		value = strings.ToLower(value)
	}
	switch key {
	case "auth_type":
		if iniUnsupportedAuthTypes[value] {
			return "", fmt.Errorf("pgbouncer.auth_type: %q is not supported by pgferry; use md5, scram-sha-256, plain, trust, cert or hba", value)
		}
	case "auth_ident_file":
		// It decides who may log in (hba map= options), so it cannot be
		// ignored with a warning like other unknown keys.
		if value != "" {
			return "", fmt.Errorf("pgbouncer.auth_ident_file: user name maps are not supported by pgferry; remove map= options from auth_hba_file and this key")
		}
		return "", nil
	case "server_check_query":
		switch value {
		case "<empty>":
			// PgBouncer's default, as SHOW CONFIG shows it (main.c
			// empty_server_check_query): an empty Query message, which
			// is pgferry's "".
			value = ""
		case "":
			// PgBouncer checks no server then (janitor.c
			// launch_recheck); pgferry has no such setting.
			c.ServerCheckQuery = ""
			return "pgbouncer.server_check_query is empty: PgBouncer then checks no server before reuse; pgferry checks with an empty query " +
				"after server_check_delay (the default, also written <empty>)", nil
		}
	case "listen_addr":
		addr, warn, err := iniListenAddr(value)
		if err != nil {
			return "", err
		}
		if warn != "" {
			return warn, nil
		}
		value = addr
	}
	f, ok := fieldByKey(reflect.ValueOf(c).Elem(), key)
	if !ok {
		return fmt.Sprintf("pgbouncer.%s is not supported by pgferry and is ignored", key), nil
	}
	if err := setINIValue(f, value); err != nil {
		return "", fmt.Errorf("pgbouncer.%s: %w", key, err)
	}
	return "", nil
}

// iniListenAddr maps PgBouncer's listen_addr, a comma-separated list where
// "*" means all interfaces and empty means no TCP, onto pgferry's single
// address.
func iniListenAddr(v string) (addr, warning string, err error) {
	items := splitList(v)
	switch {
	case len(items) == 0:
		return "", `pgbouncer.listen_addr is empty (PgBouncer: unix socket only); pgferry always listens on TCP and keeps the default "127.0.0.1"`, nil
	case len(items) == 1:
		return items[0], "", nil
	}
	for _, it := range items {
		if it == "*" {
			return "*", "", nil
		}
	}
	return "", "", fmt.Errorf(`pgbouncer.listen_addr: pgferry listens on a single address or "*", got %q`, v)
}

// setINIPairs parses a libpq-style "k=v k='v w'" string into the struct v
// (a Database or User). prefix names the entry in messages; aliases maps
// alternative key names onto field keys. Unknown keys become warnings.
// Numbers are decimal here, unlike in [pgbouncer]: PgBouncer's loader.c
// reads a database or user line's numbers with atoi (pool_size=010 is 10);
// what atoi would read as 0 or cut short (0x10, 12abc) is refused. set
// receives the keys written (their TOML names), except a negative number
// for a key in iniInheritBelowZero, which PgBouncer reads as not set.
func setINIPairs(v reflect.Value, prefix, s string, aliases map[string]string, set map[string]bool) ([]string, error) {
	pairs, err := parseConnString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	var (
		warnings []string
		errs     []error
	)
	for _, kv := range pairs {
		key := strings.ToLower(kv[0])
		if a, ok := aliases[key]; ok {
			key = a
		}
		f, ok := fieldByKey(v, key)
		if !ok {
			warnings = append(warnings, fmt.Sprintf("%s.%s is not supported by pgferry and is ignored", prefix, key))
			continue
		}
		val := kv[1]
		if iniLookupKeys[key] {
			val = strings.ToLower(val)
		}
		if err := setFromString(f, val); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", prefix, key, err))
			continue
		}
		if iniInheritBelowZero[key] && belowZero(f) {
			f.SetZero()
			delete(set, key)
			continue
		}
		set[key] = true
	}
	return warnings, errors.Join(errs...)
}

// fieldByKey returns the field of struct v whose toml key is key, if it can
// be set from a string.
func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for _, f := range reflect.VisibleFields(v.Type()) {
		if tomlKey(f) == key && settableFromString(f.Type) {
			return v.FieldByIndex(f.Index), true
		}
	}
	return reflect.Value{}, false
}

// parseConnString splits the value of a [databases] or [users] line as
// PgBouncer's loader.c does (cstr_get_pair): pairs separated by whitespace,
// optional whitespace around "=", values optionally in single quotes where
// a doubled quote stands for one. Unlike libpq's connection strings, a backslash is
// an ordinary character, quoted or not (password=a\b is a\b), so a
// pgbouncer.ini reads here as PgBouncer reads it. Errors never quote
// values, which may be passwords.
func parseConnString(s string) ([][2]string, error) {
	var pairs [][2]string
	i := 0
	skipSpace := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			return pairs, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skipSpace()
		if i >= len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("malformed connection string: expected key=value near key %q", key)
		}
		i++ // '='
		skipSpace()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				ch := s[i]
				if ch == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						val.WriteByte('\'')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				val.WriteByte(ch)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("malformed connection string: unterminated quoted value for key %q", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				val.WriteByte(s[i])
				i++
			}
		}
		pairs = append(pairs, [2]string{key, val.String()})
	}
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }
