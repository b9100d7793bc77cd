// Package metrics exposes pgferry's state to Prometheus: collectors that
// read router.Server.Snapshot at scrape time as const metrics, the
// router.Hooks and pool.Hooks implementation that feeds the distributions
// (pool wait) and event counters (server logins, rejected clients) through
// pre-bound children, and the HTTP handler serving /metrics, /healthz and
// /readyz.
//
// It registers on the private registry it is given, never on the default
// one, and holds no pool state of its own. metrics imports router and pool;
// neither may import metrics (docs/house-style.md 2.1, 2.8).
package metrics
