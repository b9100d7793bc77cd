//go:build !linux || pgferry_nopark

package router_test

// parkingBuilt: this build keeps idle sessions on their goroutines.
const parkingBuilt = false
