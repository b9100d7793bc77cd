package router

// stackReserve is the stack a session goroutine grows to before it starts
// (see growStack).
const stackReserve = 4 << 10

// growStack makes the calling goroutine's stack big enough for a session's
// relay path in one step, while the stack is still shallow. A goroutine
// starts with a small stack and grows it by copying, which costs in
// proportion to the frames on it; left alone, a session grew twice per
// login, deep in the relay (about 19,000 instructions a copy under
// callgrind), a third of pgferry's own instructions per login.
//
//go:noinline
func growStack() byte {
	var pad [stackReserve]byte
	return lastByte(pad[:])
}

//go:noinline
func lastByte(b []byte) byte { return b[len(b)-1] }
