//go:build linux && !386

package sockio_test

const isLinux = true
