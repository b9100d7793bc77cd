package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgferry/pgferry/metrics"
)

// knownMetricNames registers pgferry's metrics and returns every family
// name a scrape can carry (histograms with their _bucket/_sum/_count).
func knownMetricNames(t *testing.T) map[string]bool {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil, "test")
	// Touch the hook-fed vectors so they appear in Gather.
	h := m.Hooks()
	h.ClientRejected("auth")
	h.PoolHooks("db", "user").WaitObserved(0)
	h.PoolHooks("db", "user").LoginObserved(0, nil)
	names := map[string]bool{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		n := f.GetName()
		names[n] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[n+s] = true
		}
	}
	// Scrape-time metrics read from router snapshots: list them from the
	// collector's descriptions.
	ch := make(chan *prometheus.Desc, 256)
	go func() { reg.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if mm := re.FindStringSubmatch(d.String()); mm != nil {
			names[mm[1]] = true
		}
	}
	return names
}

func TestDashboardAndAlertsUseOnlyMetricsPgferryExports(t *testing.T) {
	known := knownMetricNames(t)
	used := regexp.MustCompile(`pgferry_[a-z_]+`)
	for _, file := range []string{"../deploy/grafana/pgferry-dashboard.json", "../deploy/prometheus/alerts.yml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, ".json") {
			var v map[string]any
			if err := json.Unmarshal(data, &v); err != nil {
				t.Fatalf("%s is not valid JSON: %v", file, err)
			}
		}
		for _, name := range used.FindAllString(string(data), -1) {
			if !known[name] {
				t.Errorf("%s uses %s, which pgferry does not export", file, name)
			}
		}
	}
}
