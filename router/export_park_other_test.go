//go:build !linux || pgferry_nopark

package router

// ListenerWaitersOpen reports 0: no listener keeps a duplicate here.
func ListenerWaitersOpen(*Server) int { return 0 }
