package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/metrics"
	"github.com/pgferry/pgferry/router"
)

// Through the wildcard entry ("*") a client may name any database. Names
// the server does not have leave no pool behind, so no series: clients
// trying names cannot grow the scrape (or pgferry's pools) without bound.
// A database that exists keeps its pool and series.
func TestDatabaseNamesTheServerDoesNotHaveLeaveNoSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil, "test")
	cfg := ferrytest.Config(t, cluster)
	db := cfg.Databases["app"]
	db.DBName = ""
	cfg.Databases["*"] = db
	delete(cfg.Databases, "app")
	f := ferrytest.Start(t, cfg, func(o *router.Options) { o.Hooks = m.Hooks() })
	m.SetServer(f.Server)
	hs := httptest.NewServer(metrics.Handler(reg, nil))
	defer hs.Close()
	ctx := context.Background()

	for i := range 20 {
		for range 2 { // the second time too, the server's answer
			c, err := pgx.Connect(ctx, f.DSN(fmt.Sprintf("no_such_db_%d", i), ferrytest.User, ferrytest.Password))
			if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "3D000" {
				if err == nil {
					c.Close(ctx)
				}
				t.Fatalf("no_such_db_%d: %v, want 3D000", i, err)
			}
		}
	}
	c, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, ferrytest.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}

	code, body := get(t, hs.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d:\n%s", code, body)
	}
	if bytes.Contains(body, []byte("no_such_db_")) {
		var lines []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.Contains(l, "no_such_db_") {
				lines = append(lines, l)
			}
		}
		t.Fatalf("%d series of databases the server does not have, e.g. %s", len(lines), lines[0])
	}
	if !bytes.Contains(body, []byte(`pgferry_transactions_total{database="app",user="app"}`)) {
		t.Fatalf("no series of the database that exists:\n%s", body)
	}
	if n := len(f.Server.Snapshot().Pools); n != 1 {
		t.Fatalf("%d pools, want app's alone", n)
	}
}
