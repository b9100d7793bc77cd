package metrics_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/metrics"
	"github.com/pgferry/pgferry/router"
)

// Two users' pools of one database with a read replica: each pool has its
// own replica pool, and the scrape reports the database's replica
// connections once, summed, instead of the same series twice (which fails
// the whole scrape).
func TestADatabaseWithAReplicaServedToTwoUsersIsScrapedOnce(t *testing.T) {
	ctx := context.Background()
	if err := cluster.CreateRole(ctx, "app2", ferrytest.Password); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil, "test")
	cfg := ferrytest.Config(t, cluster)
	cfg.Users["app2"] = configs.User{Password: configs.Secret(ferrytest.Password)}
	db := cfg.Databases["app"]
	// The primary itself stands in for a replica: the lag monitor takes it
	// out of rotation (it is not in recovery), its pools still exist.
	db.Replicas = []configs.Replica{{Host: cluster.Host, Port: cluster.Port, Weight: 1}}
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg, func(o *router.Options) { o.Hooks = m.Hooks() })
	m.SetServer(f.Server)
	hs := httptest.NewServer(metrics.Handler(reg, nil))
	defer hs.Close()

	for _, user := range []string{"app", "app2"} {
		c, err := pgx.Connect(ctx, f.DSN("app", user, ferrytest.Password))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if _, err := c.Exec(ctx, "select 1"); err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		c.Close(ctx)
	}
	code, body := get(t, hs.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d:\n%s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	for _, state := range []string{"active", "idle", "login"} {
		if _, ok := sample(fams, "pgferry_server_replica_connections", map[string]string{"database": "app", "state": state}); !ok {
			t.Errorf("pgferry_server_replica_connections{state=%q} missing", state)
		}
	}
	checkWithPromtool(t, body)
}
