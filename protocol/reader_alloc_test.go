package protocol_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/pgferry/pgferry/protocol"
)

func TestReaderNextDoesNotAllocateTheClaimedSizeOfATruncatedFrame(t *testing.T) {
	// A header announcing a 1 GiB Query followed by a few bytes and EOF,
	// as a hostile or broken client could send.
	var src bytes.Buffer
	src.WriteByte('Q')
	binary.Write(&src, binary.BigEndian, uint32(1<<30-1))
	src.WriteString("select 1")
	rd := protocol.NewReader(&src)
	defer rd.Release()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := rd.Next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("reading a truncated frame allocated %d bytes", grew)
	}
}

func TestReaderNextReassemblesAFrameLargerThanItsBufferFromSmallReads(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640,000 bytes
	var frame []byte
	frame = append(frame, 'd')
	frame = binary.BigEndian.AppendUint32(frame, uint32(4+len(body)))
	frame = append(frame, body...)
	frame = append(frame, 'Z', 0, 0, 0, 5, 'I')
	rd := protocol.NewReader(&oneByteAtATimeAfter{data: frame, fast: 100})
	defer rd.Release()
	got, err := rd.Next()
	if err != nil || !bytes.Equal(got, frame[:len(frame)-6]) {
		t.Fatalf("big frame: %d bytes, %v", len(got), err)
	}
	got, err = rd.Next()
	if err != nil || string(got) != "Z\x00\x00\x00\x05I" {
		t.Fatalf("next frame: %q, %v", got, err)
	}
}

// oneByteAtATimeAfter returns the first fast bytes in one read, then reads
// of at most 7 bytes, then chunks of up to 64 KiB: short reads at odd
// boundaries.
type oneByteAtATimeAfter struct {
	data []byte
	fast int
	n    int
}

func (r *oneByteAtATimeAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	limit := 64 << 10
	switch {
	case r.n == 0:
		limit = r.fast
	case r.n < 50:
		limit = 7
	}
	r.n++
	n := copy(p[:min(len(p), limit)], r.data)
	r.data = r.data[n:]
	return n, nil
}
