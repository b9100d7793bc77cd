//go:build !pgferry_nostackgrow

package router

// stackReserve is the frame growStack asks for: from a new goroutine's
// 2 KiB the runtime grows the stack to 8 KiB in one copy, enough for a
// plain login and the relay.
const stackReserve = 4 << 10

// growStack makes the calling goroutine's stack big enough for a session's
// relay path in one step, while the stack is still shallow. A goroutine
// starts with a small stack and grows it by copying, which costs in
// proportion to the frames on it; left alone, a plain SCRAM login and its
// first query grew the stack three times, deep in the login read and the
// relay (about 19,000 instructions a copy under callgrind: 29% of the
// process's instructions per login).
//
//go:noinline
func growStack() byte {
	var pad [stackReserve]byte
	return lastByte(pad[:])
}

//go:noinline
func lastByte(b []byte) byte { return b[len(b)-1] }
