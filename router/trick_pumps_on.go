//go:build !pgferry_nopumpcache

package router

// pumpIdleWorkers is how many relay goroutines stay parked between loans
// (workers.go). The build tag pgferry_nopumpcache switches the cache off for
// diagnosis: a goroutine per pumped loan.
const pumpIdleWorkers = 1024
