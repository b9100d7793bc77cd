//go:build pgferry_nopumpcache

package router

// pumpIdleWorkers is 0 in this build (pgferry_nopumpcache; see
// trick_pumps_on.go).
const pumpIdleWorkers = 0
