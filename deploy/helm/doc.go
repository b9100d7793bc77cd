// Package helm holds the checks of pgferry's Helm chart, deploy/helm/pgferry:
// its tests render the chart with Helm v4 (built from its Go module, as
// check.sh does) and inspect the manifests. It has no code of its own and
// nothing imports it.
package helm
