package router

import (
	"context"
	"reflect"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
)

// unreachableConfig parses a configuration of user app (password
// app-secret, plain auth) and database app on 127.0.0.1 port 1, where no
// server listens, with extra global settings: for tests of what happens
// before a server is dialed.
func unreachableConfig(t *testing.T, extra string) *configs.Config {
	t.Helper()
	cfg, _, err := configs.Parse([]byte(`
listen_addr = "127.0.0.1"
auth_type = "plain"
`+extra+`
[users.app]
password = "app-secret"
[databases.app]
host = "127.0.0.1"
port = 1
`), "toml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAPoolBuiltFromAConfigurationAReloadReplacedIsBuiltAgainFromTheNewOne(t *testing.T) {
	before, after := unreachableConfig(t, "default_pool_size = 3"), unreachableConfig(t, "default_pool_size = 7")
	srv, err := New(before, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	// A login read the database entry, then a reload swapped the
	// configuration and looked at the pools before this one existed.
	if err := srv.Reload(after); err != nil {
		t.Fatal(err)
	}
	e, err := srv.poolFor(before, "app", before.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if size := e.pool.Config().Size; size != 7 {
		t.Errorf("the pool has %d server connections, the replaced configuration's size; want 7, the reload's", size)
	}
	again, err := srv.poolFor(after, "app", after.Databases["app"], "app", "")
	if err != nil || again != e {
		t.Errorf("the next login found another pool (%v): the first was not registered", err)
	}
}

// TestAReloadThatChangesOnlyAUsersPoolSizesRebuildsItsPools: [users]'
// pool_size and reserve_pool_size size the user's pools (poolSizes), so a
// reload that changes them alone must rebuild those pools, as one that
// changes a database's pool_size does.
func TestAReloadThatChangesOnlyAUsersPoolSizesRebuildsItsPools(t *testing.T) {
	before := unreachableConfig(t, "")
	after := unreachableConfig(t, "")
	size, reserve := 4, 0
	u := after.Users["app"]
	u.PoolSize, u.ReservePoolSize = &size, &reserve
	after.Users["app"] = u
	srv, e := serverWithAppPool(t, before)
	if err := srv.Reload(after); err != nil {
		t.Fatal(err)
	}
	again, err := srv.poolFor(after, "app", after.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if again == e {
		t.Fatal("the reload kept the pool built without the user's pool_size")
	}
	if pc := again.pool.Config(); pc.Size != 4 {
		t.Errorf("the rebuilt pool has size %d; want the user's 4", pc.Size)
	}
}

// limitMax reads the cap of l (pool.Limit keeps it unexported); 0 for no
// limit.
func limitMax(l *pool.Limit) int64 {
	if l == nil {
		return 0
	}
	return reflect.ValueOf(l).Elem().FieldByName("max").Int()
}

// TestAReloadThatChangesADatabasesOrAUsersCapGivesTheNewPoolsTheNewCap:
// PgBouncer 1.25.2 reads max_db_connections and max_user_connections
// afresh at each new server connection (objects.c launch_new_connection),
// so a reload that changes them applies at once. pgferry rebuilt the
// database's pools but kept the database's shared cap, made for the old
// value, until a global setting changed too (max_db_connections 2 then 5:
// the new pools still stopped at 2); a user's cap changed alone rebuilt
// nothing, and its pools kept the old one.
func TestAReloadThatChangesADatabasesOrAUsersCapGivesTheNewPoolsTheNewCap(t *testing.T) {
	before, after := unreachableConfig(t, ""), unreachableConfig(t, "")
	db := before.Databases["app"]
	db.MaxDBConnections = 2
	before.Databases["app"] = db
	db.MaxDBConnections = 5
	after.Databases["app"] = db
	u := before.Users["app"]
	u.MaxUserConnections = 3
	before.Users["app"] = u
	u.MaxUserConnections = 7
	after.Users["app"] = u
	srv, e := serverWithAppPool(t, before)
	if d, u := limitMax(e.pool.Config().DBLimit), limitMax(e.pool.Config().UserLimit); d != 2 || u != 3 {
		t.Fatalf("before the reload: caps %d and %d, want 2 and 3", d, u)
	}
	if err := srv.Reload(after); err != nil {
		t.Fatal(err)
	}
	e, err := srv.poolFor(after, "app", after.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if d, u := limitMax(e.pool.Config().DBLimit), limitMax(e.pool.Config().UserLimit); d != 5 || u != 7 {
		t.Errorf("after the reload: max_db_connections %d and max_user_connections %d in force, want 5 and 7", d, u)
	}

	// A user's cap changed alone.
	again := unreachableConfig(t, "")
	again.Databases["app"] = db
	u.MaxUserConnections = 9
	again.Users["app"] = u
	if err := srv.Reload(again); err != nil {
		t.Fatal(err)
	}
	e, err = srv.poolFor(again, "app", again.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if u := limitMax(e.pool.Config().UserLimit); u != 9 {
		t.Errorf("after a reload of the user's cap alone: max_user_connections %d in force, want 9", u)
	}
}

// serverWithAppPool is a Server of cfg, shut down at the test's end, and
// the pool of user app on database app, made as a login makes it.
func serverWithAppPool(t *testing.T, cfg *configs.Config) (*Server, *poolEntry) {
	t.Helper()
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	e, err := srv.poolFor(cfg, "app", cfg.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
	return srv, e
}
