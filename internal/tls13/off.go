//go:build pgferry_notls13

package tls13

const enabled = false
