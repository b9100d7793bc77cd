//go:build race

package sockio

import "sync/atomic"

// The race detector learns of the ordering a socket gives (what a goroutine
// did before writing happened before what the reader does after reading)
// from the syscall package's own annotations, which raw system calls skip.
// An atomic counter stands in for them in race builds.
var ioSync atomic.Uint64

func releaseIO() { ioSync.Add(1) }
func acquireIO() { ioSync.Load() }
