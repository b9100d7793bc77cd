//go:build !linux || 386 || pgferry_nosockio

package sockio_test

const isLinux = false
