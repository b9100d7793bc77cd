package router

import (
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/internal/tls13"
)

func TestTheLoopServesSessionsOnlyWhereTheConfigurationLetsIt(t *testing.T) {
	minute := configs.Duration(time.Minute)
	cases := []struct {
		name string
		set  func(*configs.Config)
		want bool
	}{
		{"relay_loop on, nothing else set", func(*configs.Config) {}, true},
		{"relay_loop off", func(c *configs.Config) { c.RelayLoop = false }, false},
		{"query_timeout set", func(c *configs.Config) { c.QueryTimeout = minute }, false},
		{"transaction_timeout set", func(c *configs.Config) { c.TransactionTimeout = minute }, false},
		{"client_idle_timeout set", func(c *configs.Config) { c.ClientIdleTimeout = minute }, false},
		{"idle_transaction_timeout set", func(c *configs.Config) { c.IdleTransactionTimeout = minute }, false},
		{"client_tls_sslmode = allow", func(c *configs.Config) { c.ClientTLSSSLMode = "allow" }, true},
		{"client_tls_sslmode = prefer", func(c *configs.Config) { c.ClientTLSSSLMode = "prefer" }, true},
		{"client_tls_sslmode = require", func(c *configs.Config) { c.ClientTLSSSLMode = "require" }, tls13.Usable()},
		{"client_tls_sslmode = verify-ca", func(c *configs.Config) { c.ClientTLSSSLMode = "verify-ca" }, tls13.Usable()},
		{"client_tls_sslmode = verify-full", func(c *configs.Config) { c.ClientTLSSSLMode = "verify-full" }, tls13.Usable()},
	}
	db := configs.Database{Host: "127.0.0.1", Port: 5432}
	for _, tc := range cases {
		cfg := configs.Default()
		cfg.RelayLoop = true
		tc.set(cfg)
		if got := loopConfig(cfg); got != tc.want {
			t.Errorf("%s: the loop may serve sessions = %v, want %v", tc.name, got, tc.want)
		}
		// A pool dials its servers detached only where the loop can serve
		// its sessions: a goroutine's waits for a detached one cost more.
		if got, want := detachedServers(cfg, db, "app"), tc.want && loopBuilt && inlineRelay && sockio.Available && sockio.DetachAvailable; got != want {
			t.Errorf("%s: the pool dials detached servers = %v, want %v", tc.name, got, want)
		}
	}
}
