// SHOW CONFIG, DATABASES, USERS and PEERS: the configuration in force.

package admin

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgferry/pgferry/configs"
)

func (c *Console) showDatabases(rs *resultSet) {
	rs.cols = databasesCols
	cfg := c.b.Config()
	type agg struct{ conns, clients int }
	byDB := make(map[string]*agg)
	for _, p := range c.b.Snapshot().Pools {
		a := byDB[p.Database]
		if a == nil {
			a = &agg{}
			byDB[p.Database] = a
		}
		a.conns += p.Stat.Total
		a.clients += p.ClientsActive + p.ClientsWaiting + p.ClientsIdle
	}
	names := make([]string, 0, len(cfg.Databases)+len(byDB))
	for n := range cfg.Databases {
		if n == "*" {
			continue // the wildcard is no database: those it made are listed, with a pool
		}
		names = append(names, n)
	}
	for n := range byDB {
		if _, ok := cfg.Databases[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	st := c.b.PauseState()
	for _, n := range names {
		db, _, ok := cfg.LookupDatabase(n)
		if !ok {
			continue // pool of a database removed by a reload
		}
		dbname := db.DBName
		if dbname == "" {
			dbname = n
		}
		size := db.PoolSize
		if size == 0 {
			size = cfg.DefaultPoolSize
		}
		a := byDB[n]
		if a == nil {
			a = &agg{}
		}
		auth := db.Auth
		if auth == "" {
			auth = "password"
		}
		// load_balance_hosts is NULL: pgferry fails over along a host list
		// rather than balancing over it; max_client_connections 0: no
		// per-database client limit. paused is the database's own pause
		// (PAUSE db, KILL db: PgBouncer's db_paused), not PAUSE's of the
		// whole pooler, and whether or not it has a pool.
		var forceUser any // NULL without one, as in PgBouncer
		if db.User != "" {
			forceUser = db.User
		}
		rs.add(n, db.Host, db.Port, dbname, forceUser, size, db.MinPoolSize, db.ReservePool,
			int64(cfg.ServerLifetime.Std()/time.Second), db.PoolMode, nil,
			db.MaxDBConnections, a.conns, 0, a.clients, st.dbPaused(n), false, auth)
	}
}

func (c *Console) showConfig(rs *resultSet) {
	rs.cols = configCols
	cur := reflect.ValueOf(c.b.Config()).Elem()
	d := configs.Default()
	d.RelayLoop = configs.RelayLoopDefault()
	def := reflect.ValueOf(d).Elem()
	fixed := restartOnlyKeys()
	var keys []string
	idx := map[string]int{}
	t := cur.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" || f.Type.Kind() == reflect.Map || f.Type.Kind() == reflect.Struct {
			continue // tables ([databases], client_entra), not settings
		}
		keys = append(keys, key)
		idx[key] = i
	}
	slices.Sort(keys)
	for _, k := range keys {
		i := idx[k]
		changeable := "yes"
		if fixed[k] {
			changeable = "no"
		}
		rs.add(k, configValue(cur.Field(i)), configValue(def.Field(i)), changeable)
	}
}

// configValue formats a setting as PgBouncer's SHOW CONFIG does (libusual
// cfparser.c): a duration as its seconds ("%g": 600, 0.5), a boolean as 0
// or 1, a list comma-separated, so that scripts reading PgBouncer's values
// read pgferry's. Other Stringers (Secret) print themselves, so secrets
// print redacted.
func configValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case configs.Duration:
		return strconv.FormatFloat(x.Std().Seconds(), 'g', -1, 64)
	case bool:
		if x {
			return "1"
		}
		return "0"
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range v.Len() {
			parts[i] = configValue(v.Index(i))
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}

// restartOnlyKeys asks configs which top-level settings a reload cannot
// change, by changing each one in turn.
var restartOnlyKeys = sync.OnceValue(func() map[string]bool {
	out := make(map[string]bool)
	base := configs.Default()
	t := reflect.TypeOf(*base)
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" {
			continue
		}
		changed := *base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Slice:
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
		default:
			continue
		}
		if len(configs.RestartOnlyChanges(base, &changed)) > 0 {
			out[key] = true
		}
	}
	return out
})

// showUsers answers SHOW USERS with PgBouncer 1.25.2's columns (admin.c
// admin_show_users): for each user in [users] or auth_file (PgBouncer lists
// every user it loaded from auth_file, logged in or not: seen by running
// it), or with a pool or a client now, its pool_size and reserve_pool_size
// as text ("%9d", "" when [users] sets none), its pool_mode (NULL when it inherits), max_user_connections in force and its
// server connections, max_user_client_connections (0: pgferry has no such
// limit) and its clients, admin console clients included. PgBouncer also
// lists its admin database's user "pgbouncer" (pgferry lists no such
// database either), and carries one user's pool_size and
// reserve_pool_size over to the users after it that set none (its buffers
// are not cleared between rows); pgferry does neither.
func (c *Console) showUsers(rs *resultSet) {
	rs.cols = usersCols
	cfg := c.b.Config()
	type counts struct{ servers, clients int }
	users := make(map[string]*counts, len(cfg.Users))
	get := func(name string) *counts {
		u := users[name]
		if u == nil {
			u = &counts{}
			users[name] = u
		}
		return u
	}
	for n := range cfg.Users {
		get(n)
	}
	for _, n := range c.b.AuthUsers() {
		get(n)
	}
	for _, p := range c.b.Snapshot().Pools {
		// PoolInfo.User is the server login user, whose connections
		// PgBouncer counts (user->connection_count), as SHOW DATABASES
		// counts a database's: the primary's.
		get(p.User).servers += p.Stat.Total
	}
	for _, cl := range c.b.Clients() {
		get(cl.User).clients++
	}
	for _, n := range slices.Sorted(maps.Keys(users)) {
		u := cfg.Users[n]
		var mode any
		if u.PoolMode != "" {
			mode = u.PoolMode
		}
		limit := u.MaxUserConnections
		if limit == 0 {
			limit = cfg.MaxUserConnections
		}
		rs.add(n, userSize(u.PoolSize), userSize(u.ReservePoolSize), mode, limit, users[n].servers, 0, users[n].clients)
	}
}

// userSize prints a [users] pool size as PgBouncer does ("%9d"), "" when
// not set.
func userSize(n *int) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf("%9d", *n)
}

// showPeers lists the [peers] entries (PgBouncer's SHOW PEERS); peers found
// through peers_dns are not listed, having no ids.
func (c *Console) showPeers(rs *resultSet) {
	rs.cols = peersCols
	cfg := c.b.Config()
	for _, name := range slices.Sorted(maps.Keys(cfg.Peers)) {
		p := cfg.Peers[name]
		id, _ := strconv.Atoi(name)
		port := p.Port
		if port == 0 {
			port = 6432
		}
		rs.add(id, p.Host, port, 0)
	}
}
