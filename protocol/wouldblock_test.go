package protocol

import (
	"bytes"
	"errors"
	"testing"
)

// tricklingReader gives out its data a few bytes per read, and
// ErrWouldBlock whenever a read comes before more has "arrived" (after
// every second read), as a non-blocking socket does.
type tricklingReader struct {
	data  []byte
	off   int
	reads int
}

func (r *tricklingReader) Read(p []byte) (int, error) {
	r.reads++
	if r.reads%2 == 0 || r.off == len(r.data) {
		return 0, ErrWouldBlock
	}
	n := copy(p, r.data[r.off:min(len(r.data), r.off+3)])
	r.off += n
	return n, nil
}

func TestAFrameArrivingInPiecesOnANonBlockingSourceIsBufferedWhole(t *testing.T) {
	want := frame('Q', "select 1\x00")
	src := &tricklingReader{data: append(append([]byte(nil), want...), frame('S', "")...)}
	rd := NewReader(src)
	var got []byte
	for tries := 0; got == nil; tries++ {
		if tries > 100 {
			t.Fatal("the frame never became whole")
		}
		typ, size, err := rd.Peek()
		if err == ErrWouldBlock {
			continue
		}
		if err != nil || typ != 'Q' || size != len(want) {
			t.Fatalf("Peek: %q, %d, %v", typ, size, err)
		}
		f, err := rd.FillFrame(size)
		if err == ErrWouldBlock {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append([]byte(nil), f...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("FillFrame gave %q, want %q", got, want)
	}
	// FillFrame consumed nothing: NextPeeked hands out the same frame.
	f, err := rd.NextPeeked(len(want))
	if err != nil || !bytes.Equal(f, want) {
		t.Fatalf("NextPeeked after FillFrame: %q, %v", f, err)
	}
}

func TestFillFrameRefusesAFrameLargerThanTheBuffer(t *testing.T) {
	rd := NewReader(bytes.NewReader(nil))
	if _, err := rd.FillFrame(BufferSize + 1); err == nil {
		t.Fatal("FillFrame accepted a frame larger than the buffer")
	}
}

func TestSetSourceKeepsWhatTheReaderHasBuffered(t *testing.T) {
	a, b := frame('Q', "a\x00"), frame('Q', "b\x00")
	rd := NewReader(&tricklingReader{data: append(append([]byte(nil), a...), b[:2]...)})
	for {
		if _, err := rd.FillFrame(len(a)); err == nil {
			break
		} else if err != ErrWouldBlock {
			t.Fatal(err)
		}
	}
	rd.SetSource(bytes.NewReader(b[2:])) // the same stream, read another way
	for i, want := range [][]byte{a, b} {
		got, err := rd.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %q, %v; want %q", i, got, err, want)
		}
	}
}

func TestReadMoreKeepsAFilledFrameAndAddsWhatFollowsUntilTheBufferIsFull(t *testing.T) {
	parse := frame('P', "\x00select 1\x00\x00\x00")
	rest := append(frame('B', "\x00\x00\x00\x00\x00\x00\x00"), frame('S', "")...)
	src := &tricklingReader{data: parse}
	rd := NewReader(src)
	rd.Small = make([]byte, 32) // (ReadMore grows it into a pooled buffer)
	for {
		if _, err := rd.FillFrame(len(parse)); err == nil {
			break
		} else if err != ErrWouldBlock {
			t.Fatal(err)
		}
	}
	if n, err := rd.ReadMore(); n != 0 || err != ErrWouldBlock {
		t.Fatalf("ReadMore with nothing sent: %d, %v; want ErrWouldBlock", n, err)
	}
	src.data = append(src.data, rest...)
	for tries := 0; rd.Buffered() < len(parse)+len(rest); tries++ {
		if tries > 100 {
			t.Fatal("ReadMore never read the rest")
		}
		if _, err := rd.ReadMore(); err != nil && err != ErrWouldBlock {
			t.Fatal(err)
		}
	}
	for i, want := range [][]byte{parse, rest[:len(rest)-5], rest[len(rest)-5:]} {
		got, err := rd.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %q, %v; want %q", i, got, err, want)
		}
	}

	full := NewReader(bytes.NewReader(make([]byte, 2*BufferSize)))
	for tries := 0; full.Buffered() < BufferSize; tries++ {
		if tries > 100 {
			t.Fatal("ReadMore never filled the buffer")
		}
		if _, err := full.ReadMore(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := full.ReadMore(); err != ErrBufferFull {
		t.Fatalf("ReadMore with %d bytes buffered: %v; want ErrBufferFull", full.Buffered(), err)
	}
	if full.Buffered() != BufferSize {
		t.Fatalf("%d bytes buffered; want no more than the buffer holds (%d)", full.Buffered(), BufferSize)
	}
}

func TestReadMoreAfterAConsumedFrameKeepsTheRestInOrderWithinASmallBuffer(t *testing.T) {
	a, b, c := frame('Q', "a\x00"), frame('Q', "bb\x00"), frame('Q', "ccc\x00")
	src := &tricklingReader{data: append(append([]byte(nil), a...), b...)}
	rd := NewReader(src)
	rd.Small = make([]byte, 20) // room for a and b, then for b and c once a is gone
	for tries := 0; rd.Buffered() < len(a)+len(b); tries++ {
		if tries > 100 {
			t.Fatal("the first frames never arrived")
		}
		if _, err := rd.ReadMore(); err != nil && err != ErrWouldBlock {
			t.Fatal(err)
		}
	}
	if got, err := rd.Next(); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("first frame %q, %v", got, err)
	}
	src.data = append(src.data, c...)
	for tries := 0; rd.Buffered() < len(b)+len(c); tries++ {
		if tries > 100 {
			t.Fatal("the last frame never arrived")
		}
		if _, err := rd.ReadMore(); err != nil && err != ErrWouldBlock {
			t.Fatal(err)
		}
	}
	if rd.HoldsBuffer() {
		t.Fatal("ReadMore took a pooled buffer for bytes that fit in Small")
	}
	for i, want := range [][]byte{b, c} {
		if got, err := rd.Next(); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %q, %v; want %q", i, got, err, want)
		}
	}
}

// choosyWriter takes at most room bytes, then ErrWouldBlock until room is
// raised.
type choosyWriter struct {
	got  []byte
	room int
}

func (w *choosyWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.room)
	w.got = append(w.got, p[:n]...)
	w.room -= n
	if n < len(p) {
		return n, ErrWouldBlock
	}
	return n, nil
}

func TestAFlushThatWouldBlockKeepsTheRestForTheNextFlush(t *testing.T) {
	dst := &choosyWriter{room: 5}
	w := NewWriter(dst)
	want := append(frame('D', "0123456789"), frame('Z', "I")...)
	w.Append(want)
	if err := w.Flush(); err != ErrWouldBlock {
		t.Fatalf("Flush into a full destination: %v, want ErrWouldBlock", err)
	}
	if w.Len() != len(want)-5 {
		t.Fatalf("%d bytes pending, want %d", w.Len(), len(want)-5)
	}
	w.Append(frame('C', "x\x00")) // more answers queue behind the rest
	dst.room = 1 << 20
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want = append(want, frame('C', "x\x00")...); !bytes.Equal(dst.got, want) {
		t.Fatalf("the destination got %q, want %q", dst.got, want)
	}
	if w.Len() != 0 {
		t.Fatalf("%d bytes still pending", w.Len())
	}
}

// holdingDest takes every byte written to it, as a TLS connection seals a
// record whole, but sends them only while open; what it took and did not
// send it holds (Holder).
type holdingDest struct {
	open   bool
	held   []byte
	sent   []byte
	broken error
}

func (d *holdingDest) Write(p []byte) (int, error) {
	if err := d.Drain(); err != nil {
		return 0, err
	}
	d.held = append(d.held, p...)
	return len(p), d.Drain()
}

func (d *holdingDest) Unsent() int { return len(d.held) }

func (d *holdingDest) Drain() error {
	switch {
	case d.broken != nil:
		return d.broken
	case !d.open:
		if len(d.held) == 0 {
			return nil
		}
		return ErrWouldBlock
	}
	d.sent, d.held = append(d.sent, d.held...), nil
	return nil
}

func TestBytesTheDestinationHoldsCountAsPendingAndGoOutOnTheNextFlush(t *testing.T) {
	dst := &holdingDest{}
	w := NewWriter(dst)
	want := frame('Z', "I")
	w.Append(want)
	if err := w.Flush(); err != ErrWouldBlock {
		t.Fatalf("Flush to a destination that holds what it took: %v; want ErrWouldBlock", err)
	}
	if w.Len() != len(want) {
		t.Fatalf("Len %d with the destination holding the frame; want %d", w.Len(), len(want))
	}
	if err := w.Flush(); err != ErrWouldBlock || w.Len() != len(want) {
		t.Fatalf("Flush while the destination still cannot send: %v, Len %d", err, w.Len())
	}
	dst.open = true
	if err := w.Flush(); err != nil || w.Len() != 0 || !bytes.Equal(dst.sent, want) {
		t.Fatalf("Flush once it can send: %v, Len %d, sent %q", err, w.Len(), dst.sent)
	}

	// A destination that fails while it holds bytes: a WriteError.
	dst.open, dst.sent = false, nil
	w.Append(want)
	w.Flush()
	dst.broken = errors.New("connection reset")
	var we *WriteError
	if err := w.Flush(); !errors.As(err, &we) {
		t.Fatalf("Flush to a failed destination holding bytes: %v; want a WriteError", err)
	}
}
