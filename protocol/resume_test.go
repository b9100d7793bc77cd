package protocol

import (
	"bytes"
	"errors"
	"testing"
)

// stallingReader hands out data in 1000-byte reads and fails once with
// errStall when it reaches offset stallAt, as a read deadline set to wake
// a reader would.
type stallingReader struct {
	data    []byte
	off     int
	stallAt int
	stalled bool
}

var errStall = errors.New("read interrupted")

func (s *stallingReader) Read(p []byte) (int, error) {
	if !s.stalled && s.off >= s.stallAt {
		s.stalled = true
		return 0, errStall
	}
	end := min(len(s.data), s.off+min(len(p), 1000))
	if !s.stalled {
		end = min(end, s.stallAt)
	}
	n := copy(p, s.data[s.off:end])
	s.off += n
	return n, nil
}

func bigFrameThenSmall() (big, small, stream []byte) {
	body := bytes.Repeat([]byte("0123456789"), 3*BufferSize/10+7)
	big, small = frame('d', string(body)), frame('Z', "I")
	return big, small, append(append([]byte(nil), big...), small...)
}

func TestAnInterruptedReadOfALargeFrameResumesWhereItStopped(t *testing.T) {
	big, small, data := bigFrameThenSmall()
	rd := NewReader(&stallingReader{data: data, stallAt: 2*BufferSize + 123})
	typ, size, err := rd.Peek()
	if err != nil || typ != 'd' || size != len(big) {
		t.Fatalf("Peek = %q, %d, %v", typ, size, err)
	}
	if _, err := rd.NextPeeked(size); !errors.Is(err, errStall) {
		t.Fatalf("first read: %v, want the interruption", err)
	}
	if rd.Buffered() == 0 || rd.HasFrame() {
		t.Fatal("after the interruption the reader claims nothing (or a whole frame) is pending")
	}
	if typ, size, err = rd.Peek(); err != nil || typ != 'd' || size != len(big) {
		t.Fatalf("Peek after the interruption = %q, %d, %v; want the same frame again", typ, size, err)
	}
	got, err := rd.NextPeeked(size)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("resumed read: %d bytes (equal: %v), %v", len(got), bytes.Equal(got, big), err)
	}
	if got, err := rd.Next(); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("the frame after: %q, %v", got, err)
	}
}

func TestAnInterruptedForwardOfALargeFrameStreamsTheRestOnRetry(t *testing.T) {
	_, _, data := bigFrameThenSmall()
	for _, stallAt := range []int{3, 2*BufferSize + 123} {
		rd := NewReader(&stallingReader{data: data, stallAt: stallAt})
		var out bytes.Buffer
		w := NewWriter(&out)
		tries := 0
		for {
			_, size, err := rd.Peek()
			if err == nil {
				err = rd.ForwardPeeked(w, size)
			}
			if err == nil {
				break
			}
			if !errors.Is(err, errStall) || tries > 0 {
				t.Fatalf("stall at %d: forward: %v", stallAt, err)
			}
			tries++
		}
		if err := rd.Forward(w); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("stall at %d: forwarded %d bytes that differ from the %d sent", stallAt, out.Len(), len(data))
		}
	}
}

func TestAFrameReadPartlyByNextCanStillBeForwarded(t *testing.T) {
	_, _, data := bigFrameThenSmall()
	rd := NewReader(&stallingReader{data: data, stallAt: BufferSize + 500})
	_, size, _ := rd.Peek()
	if _, err := rd.NextPeeked(size); !errors.Is(err, errStall) {
		t.Fatalf("first read: %v", err)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	for i := 0; i < 2; i++ {
		if err := rd.Forward(w); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("forwarded %d bytes that differ from the %d sent", out.Len(), len(data))
	}
}

func TestAFramePartlyForwardedCannotBeReadWhole(t *testing.T) {
	_, _, data := bigFrameThenSmall()
	rd := NewReader(&stallingReader{data: data, stallAt: BufferSize + 500})
	var out bytes.Buffer
	if err := rd.Forward(NewWriter(&out)); !errors.Is(err, errStall) {
		t.Fatalf("forward: %v", err)
	}
	if _, err := rd.Next(); !errors.Is(err, errPartlyStreamed) {
		t.Fatalf("Next of a partly forwarded frame: %v, want errPartlyStreamed", err)
	}
}
