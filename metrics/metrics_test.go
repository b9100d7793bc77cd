package metrics_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/metrics"
	"github.com/pgferry/pgferry/router"
)

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// sample returns the value of the family's metric whose labels include
// all of want (counter, gauge or untyped), or the sample count of a
// histogram. ok is false when no metric matches.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestScrapeReflectsTrafficThroughPgferry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil, "v9.9.9-test")
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxClientConn = 500
	cfg.MaxUserConnections = 7
	db := cfg.Databases["app"]
	db.MaxDBConnections = 6
	db.ReservePool = 2
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg, func(o *router.Options) { o.Hooks = m.Hooks() })
	m.SetServer(f.Server)

	var ready atomic.Bool
	hs := httptest.NewServer(metrics.Handler(reg, ready.Load))
	defer hs.Close()

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range 3 {
		var n int
		// The default exec mode prepares a named statement: Parse and Bind.
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query: %d, %v", n, err)
		}
	}
	if _, err := pgx.Connect(ctx, f.DSN("app", ferrytest.User, "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}

	code, body := get(t, hs.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	pool := map[string]string{"database": "app", "user": "app"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for pk, pv := range pool {
			m[pk] = pv
		}
		return m
	}
	tests := []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64 // 0: no upper bound
	}{
		{"pgferry_transactions_total", pool, 3, 0},
		{"pgferry_queries_total", pool, 3, 0},
		{"pgferry_transaction_seconds_total", pool, 1e-9, 0},
		{"pgferry_client_logins_total", pool, 1, 1},
		{"pgferry_prepared_parses_total", with("source", "client"), 1, 0},
		{"pgferry_prepared_parses_total", with("source", "server"), 1, 0},
		{"pgferry_binds_total", pool, 3, 0},
		{"pgferry_pinned_clients", pool, 0, 0},
		{"pgferry_client_connections", with("state", "idle"), 1, 1},
		{"pgferry_client_connections", with("state", "waiting"), 0, 0},
		{"pgferry_server_connections", with("state", "idle"), 1, 0},
		{"pgferry_server_connections", with("state", "login"), 0, 0},
		{"pgferry_pool_waiting_clients", pool, 0, 0},
		{"pgferry_pool_max_wait_seconds", pool, 0, 0},
		{"pgferry_pool_acquires_total", pool, 3, 0},
		{"pgferry_pool_wait_seconds", pool, 1, 0}, // the first acquire waited for a dial
		{"pgferry_server_logins_total", with("result", "success"), 1, 0},
		{"pgferry_server_logins_total", with("result", "failure"), 0, 0},
		{"pgferry_client_rejected_total", map[string]string{"reason": "auth"}, 1, 1},
		{"pgferry_client_rejected_total", map[string]string{"reason": "max_client_conn"}, 0, 0},
		{"pgferry_client_sockets", nil, 1, 0},
		{"pgferry_client_panics_total", nil, 0, 0},
		{"pgferry_client_max_connections", nil, 500, 500},
		{"pgferry_pool_size", pool, 5, 5},
		{"pgferry_pool_min_size", pool, 0, 0},
		{"pgferry_pool_reserve_size", pool, 2, 2},
		{"pgferry_server_max_db_connections", map[string]string{"database": "app"}, 6, 6},
		{"pgferry_server_db_connections", map[string]string{"database": "app"}, 1, 6},
		{"pgferry_server_max_user_connections", map[string]string{"user": "app"}, 7, 7},
		{"pgferry_server_user_connections", map[string]string{"user": "app"}, 1, 7},
		{"pgferry_build_info", map[string]string{"version": "v9.9.9-test"}, 1, 1},
		{"go_goroutines", nil, 1, 0},
		{"process_start_time_seconds", nil, 1, 0},
	}
	for _, tc := range tests {
		v, ok := sample(fams, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v missing from the scrape", tc.name, tc.labels)
			continue
		}
		if v < tc.min || (tc.max > 0 && v > tc.max) || (tc.max == 0 && tc.min == 0 && v != 0) {
			t.Errorf("%s%v = %v, want in [%v, %v]", tc.name, tc.labels, v, tc.min, tc.max)
		}
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "database", "user", "state", "source", "reason", "result", "version", "goversion":
				default:
					if strings.HasPrefix(name, "pgferry_") {
						t.Errorf("%s has label %q outside the allowed set", name, lp.GetName())
					}
				}
			}
		}
	}

	if code, body := get(t, hs.URL+"/healthz"); code != http.StatusOK || string(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := get(t, hs.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d", code)
	}
	ready.Store(true)
	if code, _ := get(t, hs.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d", code)
	}

	checkWithPromtool(t, body)
}

// checkWithPromtool lints a scrape with `promtool check metrics` (naming,
// units, HELP). promtool comes with Debian's prometheus package, which
// .ci/run installs: missing it fails the test under CI=true and is only
// logged elsewhere.
func checkWithPromtool(t *testing.T, scrape []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required under CI: %v", err)
		}
		t.Logf("promtool not found; skipping the lint of the scrape: %v", err)
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
