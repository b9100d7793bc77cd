//go:build pgferry_nostackgrow

package router

// growStack does nothing in a build with the tag pgferry_nostackgrow: a
// session's goroutine grows its stack as Go does by itself (for diagnosis;
// see stack.go).
func growStack() byte { return 0 }
