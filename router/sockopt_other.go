//go:build !linux

package router

// listenerKeepalive is empty: Go sets keepalive on each accepted connection.
var listenerKeepalive []sockopt
