package configs

import (
	"bufio"
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config file formats accepted by [Parse].
const (
	formatTOML = "toml"
	formatINI  = "ini"
)

// envPrefix starts the name of every environment override.
const envPrefix = "PGFERRY_"

// Load reads the config file at path, applies PGFERRY_* overrides from the
// process environment and validates the result. It is LoadWithEnv with
// os.LookupEnv.
func Load(path string) (*Config, []string, error) {
	return LoadWithEnv(path, os.LookupEnv)
}

// LoadWithEnv reads the config file at path, applies environment overrides
// looked up through lookup (nil means none), fills derived defaults and
// validates the result.
//
// The format is PgBouncer ini when path ends in ".ini" or when the first
// section header is [pgbouncer], or [databases]/[users] and the file is not
// valid TOML; otherwise TOML. Relative file paths in the file (auth_file, auth_hba_file, TLS
// files, password_file, sslrootcert, Entra files) are resolved against the
// directory holding path; paths set through the environment are used as given.
//
// The returned warnings (settings that were ignored or are discouraged) are
// meant to be logged; they are returned even when err is non-nil. The error
// joins every problem found, each naming its key.
func LoadWithEnv(path string, lookup func(string) (string, bool)) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, nil, fmt.Errorf("resolve config directory: %w", err)
	}
	return parse(data, detectFormat(path, data), dir, lookup)
}

// Parse decodes data in the given format ("toml", "ini", or "" to detect it
// from the content), applies environment overrides looked up through lookup
// (nil means none), fills derived defaults and validates the result. Relative
// file paths are left relative to the working directory. Warnings and errors
// are as for [LoadWithEnv].
func Parse(data []byte, format string, lookup func(string) (string, bool)) (*Config, []string, error) {
	switch format {
	case "":
		format = detectFormat("", data)
	case formatTOML, formatINI:
	default:
		return nil, nil, fmt.Errorf("unknown config format %q: want %q or %q", format, formatTOML, formatINI)
	}
	return parse(data, format, "", lookup)
}

// parse is the shared body of Parse and LoadWithEnv; baseDir, when not empty,
// anchors relative file paths found in data.
func parse(data []byte, format, baseDir string, lookup func(string) (string, bool)) (*Config, []string, error) {
	c := Default()
	var (
		warnings []string
		errs     []error
		// explicit reports whether a per-database key was written in the
		// file, for defaults where an explicit zero means something.
		explicit func(db, key string) bool
		// relayLoopSet: relay_loop was written in the file or the
		// environment (otherwise it takes RelayLoopDefault).
		relayLoopSet bool
	)
	switch format {
	case formatINI:
		globals := map[string]bool{}
		dbSet := map[string]map[string]bool{}
		w, err := decodeINI(data, c, globals, dbSet, baseDir)
		relayLoopSet = globals["relay_loop"]
		warnings = w
		if err != nil {
			return nil, warnings, err
		}
		explicit = func(db, key string) bool { return dbSet[db][key] }
	default:
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range md.Undecoded() {
			errs = append(errs, fmt.Errorf("unknown key %q", k.String()))
		}
		if len(errs) > 0 {
			return nil, nil, errors.Join(errs...)
		}
		explicit = func(db, key string) bool {
			// pool_size = 0 in pgferry's TOML takes default_pool_size, as
			// this file's example has long said; PgBouncer's 0 (no limit
			// per pool) has no pgferry counterpart, so nothing is lost.
			return key != "pool_size" && md.IsDefined("databases", db, key)
		}
		relayLoopSet = md.IsDefined("relay_loop")
	}
	if lookup != nil {
		if _, ok := lookup(envPrefix + "RELAY_LOOP"); ok {
			relayLoopSet = true
		}
	}

	c.resolvePaths(baseDir)
	if err := applyEnv(c, lookup); err != nil {
		return nil, warnings, err
	}
	if c.RelayLoopSet = relayLoopSet; !relayLoopSet {
		c.RelayLoop = RelayLoopDefault()
	}
	errs = append(errs, c.fillDerived(explicit)...)
	errs = append(errs, c.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, warnings, err
	}
	return c, append(warnings, c.warnings()...), nil
}

// detectFormat picks the format of a config file from its name and content.
func detectFormat(path string, data []byte) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".ini":
		return formatINI
	case ".toml":
		return formatTOML
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		switch strings.ToLower(line) {
		case "[pgbouncer]":
			return formatINI
		case "[databases]", "[users]":
			// Both formats can start this way; PgBouncer's
			// "name = host=... port=..." values are not valid TOML.
			var v map[string]any
			if _, err := toml.Decode(string(data), &v); err != nil {
				return formatINI
			}
		}
		return formatTOML
	}
	return formatTOML
}

// dbKey returns the key path of a per-database setting, quoted like TOML
// ("databases.app.port", `databases."*".host`).
func dbKey(db string, rest ...string) string {
	return toml.Key(append([]string{"databases", db}, rest...)).String()
}

// sortedKeys returns the keys of m in order, so that errors and warnings come
// out deterministically.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// resolvePaths makes the relative file paths of c relative to dir.
func (c *Config) resolvePaths(dir string) {
	if dir == "" {
		return
	}
	for _, p := range []*string{
		&c.AuthFile, &c.AuthHBAFile,
		&c.ClientTLSKeyFile, &c.ClientTLSCertFile, &c.ClientTLSCAFile,
		&c.ServerTLSCAFile, &c.ServerTLSKeyFile, &c.ServerTLSCertFile,
	} {
		*p = resolvePath(dir, *p)
	}
	for name, db := range c.Databases {
		for _, p := range []*string{&db.PasswordFile, &db.SSLRootCert, &db.EntraClientSecretFile, &db.EntraTokenFile} {
			*p = resolvePath(dir, *p)
		}
		c.Databases[name] = db
	}
}

func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// fillDerived fills per-database defaults from the globals and reads password
// files. explicit reports whether a key was written for a database, so that
// an explicit zero (read_your_writes = 0, min_pool_size = 0) is kept.
func (c *Config) fillDerived(explicit func(db, key string) bool) []error {
	var errs []error
	for _, name := range sortedKeys(c.Databases) {
		db := c.Databases[name]
		if db.Port == 0 {
			db.Port = defaultDBPort
		}
		if db.DBName == "" && name != wildcardDatabase {
			db.DBName = name
		}
		// An explicit 0 is a value for these three, as in PgBouncer
		// (min_pool_size=0 on a database line keeps no server open
		// whatever the global min_pool_size); only a missing key takes
		// the global one.
		if !explicit(name, "pool_size") {
			setDefault(&db.PoolSize, c.DefaultPoolSize)
		}
		if !explicit(name, "min_pool_size") {
			setDefault(&db.MinPoolSize, c.MinPoolSize)
		}
		if !explicit(name, "reserve_pool") {
			setDefault(&db.ReservePool, c.ReservePoolSize)
		}
		// 0 is "not set" for the connection caps, in PgBouncer too
		// (database_max_connections takes the global one at 0).
		setDefault(&db.MaxDBConnections, c.MaxDBConnections)
		setDefault(&db.FleetMaxDBConnections, c.FleetMaxDBConnections)
		setDefault(&db.PoolMode, c.PoolMode)
		setDefault(&db.SSLMode, c.ServerTLSSSLMode)
		setDefault(&db.SSLRootCert, c.ServerTLSCAFile)
		setDefault(&db.Auth, authPassword)
		if db.Auth == authEntra {
			setDefault(&db.EntraCredential, entraDefault)
			setDefault(&db.EntraScope, defaultEntraScope)
		}
		if len(db.Replicas) > 0 {
			replicas := slices.Clone(db.Replicas)
			for i := range replicas {
				setDefault(&replicas[i].Port, db.Port)
				setDefault(&replicas[i].Weight, 1)
			}
			db.Replicas = replicas
		}
		if !explicit(name, "max_replica_lag_bytes") {
			setDefault(&db.MaxReplicaLagBytes, defaultMaxReplicaLagBytes)
		}
		if !explicit(name, "max_replica_lag") {
			setDefault(&db.MaxReplicaLag, defaultMaxReplicaLag)
		}
		setDefault(&db.LagCheckInterval, defaultLagCheckInterval)
		setDefault(&db.ReplicaFallback, replicaFallbackPrimary)
		if !explicit(name, "read_your_writes") {
			setDefault(&db.ReadYourWrites, defaultReadYourWrites)
		}
		if db.PasswordFile != "" {
			if db.Password != "" {
				errs = append(errs, fmt.Errorf("%s: password and password_file are mutually exclusive", dbKey(name, "password_file")))
			} else if b, err := os.ReadFile(db.PasswordFile); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", dbKey(name, "password_file"), err))
			} else {
				db.Password = Secret(strings.TrimRight(string(b), "\r\n"))
			}
		}
		c.Databases[name] = db
	}
	return errs
}

// setDefault sets *p to def when *p is the zero value.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// applyEnv sets every top-level scalar or list field whose PGFERRY_<KEY>
// variable is present. It walks the toml tags, so new keys are covered
// without a hand-kept list; maps (users, databases) are not overridable.
func applyEnv(c *Config, lookup func(string) (string, bool)) error {
	if lookup == nil {
		return nil
	}
	var errs []error
	rv := reflect.ValueOf(c).Elem()
	for _, f := range reflect.VisibleFields(rv.Type()) {
		key := tomlKey(f)
		if key == "" || !settableFromString(f.Type) {
			continue
		}
		name := envPrefix + strings.ToUpper(key)
		v, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setFromString(rv.FieldByIndex(f.Index), strings.TrimSpace(v)); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// tomlKey returns the TOML key of a struct field, or "" when it has none.
func tomlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// settableFromString reports whether setFromString handles values of type t.
func settableFromString(t reflect.Type) bool {
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.Pointer:
		// An optional integer: nil is "not set".
		switch t.Elem().Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return true
		}
		return false
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// setFromString parses s, written as in pgbouncer.ini or an environment
// variable, into v. Lists are comma-separated; booleans accept
// 0/1/yes/no/true/false/on/off. s is used as is (callers trim where the
// syntax calls for it, not inside quoted passwords). Errors may quote s, so callers must not pass
// secrets through types that can fail to parse.
func setFromString(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		if err := setFromString(e.Elem(), s); err != nil {
			return err
		}
		v.Set(e)
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", v.Type())
		}
		v.Set(reflect.ValueOf(splitList(s)).Convert(v.Type()))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// parseBool accepts PgBouncer's boolean spellings, case-insensitively.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q: want 0/1, yes/no, true/false or on/off", s)
}

// splitList splits a comma-separated list, trimming blanks and dropping
// empty items. It never returns nil, so an explicit empty list stays empty
// rather than reverting to a default.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
