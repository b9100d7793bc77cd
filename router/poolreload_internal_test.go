package router

import (
	"testing"

	"github.com/pgferry/pgferry/configs"
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
	srv, err := New(before, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	e, err := srv.poolFor(before, "app", before.Databases["app"], "app", "")
	if err != nil {
		t.Fatal(err)
	}
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
