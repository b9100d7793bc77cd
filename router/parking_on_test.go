//go:build linux && !pgferry_nopark

package router_test

// parkingBuilt: this build parks idle sessions (see park_linux.go).
const parkingBuilt = true
