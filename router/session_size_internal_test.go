package router

import (
	"testing"
	"unsafe"
)

// TestSessionStaysSmall guards the memory of idle clients: every connected
// client keeps one session struct, so it must stay in the 448-byte size
// class of Go's allocator (it was 880 bytes, 896 allocated, before login
// state, rarely used state, timestamps, the events and the mailbox moved
// out of it or shrank). A field that pushes it over belongs in loginState
// or rareState, or packed with the small fields.
func TestSessionStaysSmall(t *testing.T) {
	if size := unsafe.Sizeof(session{}); size > 448 {
		t.Errorf("a session struct is %d bytes; idle clients need it to fit 448", size)
	}
}
