//go:build pgferry_notls13

package tls13

// Enabled reports whether Takeover takes TLS 1.3 connections over (build
// tag pgferry_notls13 turns it off).
const Enabled = false
