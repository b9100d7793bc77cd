//go:build !linux

package sockio_test

const isLinux = false
