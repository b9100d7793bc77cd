package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func frame(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// loopReader replays the same bytes forever, like a busy connection.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

func TestReaderForwardsFramesUnchanged(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*BufferSize+17)
	var in bytes.Buffer
	in.Write(frame('Q', "select 1\x00"))
	in.Write(frame('d', string(big)))
	in.Write(frame('Z', "I"))
	want := append([]byte(nil), in.Bytes()...)

	var out bytes.Buffer
	rd, wr := NewReader(&in), NewWriter(&out)
	defer rd.Release()
	for i := 0; i < 3; i++ {
		if err := rd.Forward(wr); err != nil {
			t.Fatal(err)
		}
	}
	if err := wr.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("forwarded %d bytes, want %d identical bytes", out.Len(), len(want))
	}
}

func TestReaderRefusesAFrameOverTheLimitWithoutBufferingIt(t *testing.T) {
	hdr := []byte{'Q', 0x7f, 0, 0, 0}
	rd := NewReader(io.MultiReader(bytes.NewReader(hdr), &loopReader{data: []byte("a")}))
	rd.MaxMessage = 1 << 20
	_, _, err := rd.Peek()
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Limit != 1<<20 {
		t.Fatalf("got %v, want TooLargeError", err)
	}
}

func TestReaderRejectsALengthBelowFour(t *testing.T) {
	rd := NewReader(bytes.NewReader([]byte{'Q', 0, 0, 0, 3}))
	if _, _, err := rd.Peek(); !errors.Is(err, ErrBadLength) {
		t.Fatalf("got %v, want ErrBadLength", err)
	}
}

func TestForwardingSmallFramesDoesNotAllocate(t *testing.T) {
	var stream []byte
	for _, f := range [][]byte{frame('B', "\x00s\x00\x00\x00\x00\x00\x00\x00"), frame('E', "\x00\x00\x00\x00\x00"), frame('S', ""), frame('D', "\x00\x01\x00\x00\x00\x011"), frame('Z', "I")} {
		stream = append(stream, f...)
	}
	rd := NewReader(&loopReader{data: stream})
	defer rd.Release()
	wr := NewWriter(io.Discard)
	// Warm up buffers.
	for i := 0; i < 100; i++ {
		rd.Forward(wr)
	}
	wr.Flush()
	allocs := testing.AllocsPerRun(1000, func() {
		if err := rd.Forward(wr); err != nil {
			t.Fatal(err)
		}
		if wr.Len() > 4096 {
			wr.Flush()
		}
	})
	if allocs != 0 {
		t.Fatalf("Forward allocated %.1f times per frame, want 0", allocs)
	}
}

func BenchmarkForward(b *testing.B) {
	for _, size := range []int{16, 128, 1024, 6000} {
		f := frame('D', string(bytes.Repeat([]byte("x"), size)))
		b.Run("body_"+itoa(size), func(b *testing.B) {
			rd := NewReader(&loopReader{data: f})
			defer rd.Release()
			wr := NewWriter(io.Discard)
			b.ReportAllocs()
			b.SetBytes(int64(len(f)))
			for i := 0; i < b.N; i++ {
				if err := rd.Forward(wr); err != nil {
					b.Fatal(err)
				}
				if wr.Len() > 16<<10 {
					wr.Flush()
				}
			}
		})
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n > 0 || i == len(b) {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func TestParseStartup(t *testing.T) {
	startup := func(code uint32, kv ...string) []byte {
		b := binary.BigEndian.AppendUint32(nil, code)
		for _, s := range kv {
			b = append(append(b, s...), 0)
		}
		return append(b, 0)
	}
	tests := []struct {
		name     string
		body     []byte
		wantCode string // SQLSTATE of the error, "" for success
	}{
		{"a 3.0 startup with user and database is accepted", startup(ProtocolVersion30, "user", "app", "database", "db"), ""},
		{"a 3.2 startup is accepted for negotiation", startup(3<<16|2, "user", "app"), ""},
		{"protocol 2.0 is refused", startup(2<<16, "user", "app"), SQLStateFeatureNotSupported},
		{"a missing user is refused", startup(ProtocolVersion30, "database", "db"), SQLStateInvalidAuthorization},
		{"an unterminated parameter is a protocol violation", binary.BigEndian.AppendUint32(nil, ProtocolVersion30), SQLStateProtocolViolation},
		{"invalid UTF-8 is a protocol violation", startup(ProtocolVersion30, "user", "\xff\xfe"), SQLStateProtocolViolation},
		{"a short body is a protocol violation", []byte{0, 3}, SQLStateProtocolViolation},
		{"an SSLRequest with extra bytes is a protocol violation", append(binary.BigEndian.AppendUint32(nil, SSLRequestCode), 1), SQLStateProtocolViolation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseStartup(tc.body)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.wantCode || !pe.IsFatal() {
				t.Fatalf("got %v, want FATAL %s", err, tc.wantCode)
			}
		})
	}
}

func TestReadStartupRefusesAnOversizedPacketBeforeReadingIt(t *testing.T) {
	_, err := ReadStartup(bytes.NewReader([]byte{0, 0x10, 0, 0}))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != SQLStateProtocolViolation {
		t.Fatalf("got %v, want 08P01", err)
	}
}

func FuzzParseStartup(f *testing.F) {
	f.Add([]byte("\x00\x03\x00\x00user\x00app\x00\x00"))
	f.Add([]byte("\x04\xd2\x16\x2f"))
	f.Add([]byte("\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02"))
	f.Add([]byte("\x00\x03\x00\x02_pq_.x\x00y\x00user\x00u\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseStartup(body)
		if err == nil && s == nil {
			t.Fatal("nil startup without error")
		}
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a client-facing *Error", err)
			}
		}
	})
}

func FuzzReaderFraming(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x0dselect 1\x00Z\x00\x00\x00\x05I"))
	f.Add([]byte("d\x00\x00\x40\x00"))
	f.Add([]byte("X\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data))
		rd.MaxMessage = 1 << 16
		defer rd.Release()
		var out bytes.Buffer
		wr := NewWriter(&out)
		for i := 0; i < 64; i++ {
			var err error
			if i%2 == 0 {
				err = rd.Forward(wr)
			} else {
				_, err = rd.Next()
			}
			if err != nil {
				return
			}
		}
		wr.Flush()
	})
}

func TestAReaderWithASmallBufferTakesThePooledOneOnlyForLargeFramesAndGivesItBack(t *testing.T) {
	var in bytes.Buffer
	sizes := []int{3, 200, 3, 3*BufferSize + 5, 1}
	for _, n := range sizes {
		in.Write(frame('Q', string(bytes.Repeat([]byte("q"), n))))
	}
	rd := NewReader(&in)
	rd.Small = make([]byte, 16)
	var out bytes.Buffer
	wr := NewWriter(&out)
	for i, n := range sizes {
		if i%2 == 0 {
			f, err := rd.Next()
			if err != nil || len(f) != n+5 {
				t.Fatalf("frame %d: %d bytes, %v", i, len(f), err)
			}
		} else if err := rd.Forward(wr); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if rd.Buffered() == 0 {
			// Drained: the next fill must give the pooled buffer back.
			rd.fill(0)
		}
	}
	wr.Flush()
	if out.Len() != 200+5+3*BufferSize+5+5 {
		t.Fatalf("forwarded %d bytes", out.Len())
	}
	if _, _, err := rd.Peek(); err != io.EOF {
		t.Fatalf("got %v at the end, want EOF", err)
	}
	if rd.bufp != nil {
		t.Fatal("the pooled buffer is still held by a drained reader")
	}
}

func TestADetachedSmallBufferIsNoLongerReadInto(t *testing.T) {
	// One byte per read: nothing beyond the first frame is buffered when it
	// is detached (a session parks only when drained).
	src := iotest.OneByteReader(bytes.NewReader(append(frame('Q', "select 1\x00"), frame('Q', "select 2\x00")...)))
	rd := NewReader(src)
	rd.Small = make([]byte, 512)
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	small := rd.DetachSmall()
	if len(small) != 512 || rd.Small != nil {
		t.Fatalf("DetachSmall returned %d bytes and left Small = %v", len(small), rd.Small != nil)
	}
	for i := range small {
		small[i] = 0xff // now someone else's
	}
	rd.Small = make([]byte, 512)
	f, err := rd.Next()
	if err != nil || string(f[5:]) != "select 2\x00" {
		t.Fatalf("after detaching: %q, %v", f, err)
	}
	if bytes.Contains(small, []byte("select 2")) {
		t.Fatal("the Reader read into the detached buffer")
	}
}

func TestPrefilledBytesAreReadBeforeTheSourceWhateverTheBuffer(t *testing.T) {
	first := append(frame('Q', "select 1\x00"), frame('X', "")[:3]...) // a frame and a half
	rest := frame('X', "")[3:]
	for _, small := range []int{0, 8, 512} {
		rd := NewReader(iotest.OneByteReader(bytes.NewReader(rest)))
		if small > 0 {
			rd.Small = make([]byte, small)
		}
		if err := rd.Prefill(first); err != nil {
			t.Fatalf("small buffer %d: %v", small, err)
		}
		var got []byte
		for range 2 {
			f, err := rd.Next()
			if err != nil {
				t.Fatalf("small buffer %d: %v", small, err)
			}
			got = append(got, f[0])
		}
		if string(got) != "QX" {
			t.Fatalf("small buffer %d: read %q, want the prefilled Query, then Terminate completed from the source", small, got)
		}
		rd.Release()
	}
	rd := NewReader(bytes.NewReader(nil))
	if err := rd.Prefill(make([]byte, BufferSize+1)); err == nil {
		t.Fatal("prefilling more than BufferSize was accepted")
	}
}

func TestForwardRunTakesTheWholeFramesOfItsTypeBufferedAfterTheFirst(t *testing.T) {
	rows := append(append(frame('D', "row one"), frame('D', "row two")...), frame('D', "row three")...)
	tail := append(frame('C', "SELECT 3\x00"), frame('Z', "I")...)
	cut := frame('D', "a row not all here yet")
	big := frame('D', strings.Repeat("x", 40))
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte // what the first ForwardRun forwards
		max  int    // MaxMessage
	}{
		{"a run that a frame over MaxMessage ends", append(append([]byte(nil), rows...), big...), rows, 30},
		{"a run that another type ends", append(append([]byte(nil), rows...), tail...), rows, 0},
		{"a run that a cut frame ends", append(append([]byte(nil), rows...), cut[:9]...), rows, 0},
		{"a run that a bad length ends", append(append([]byte(nil), rows...), 'D', 0, 0, 0, 1), rows, 0},
		{"a frame alone", append(frame('D', "only"), tail...), frame('D', "only"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := NewReader(bytes.NewReader(tc.in))
			rd.MaxMessage = tc.max
			rd.fill(len(tc.in)) // all of it buffered, as after a read
			typ, size, err := rd.Peek()
			if err != nil || typ != 'D' {
				t.Fatalf("Peek: %q, %v", typ, err)
			}
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := rd.ForwardRun(w, typ, size); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tc.want) {
				t.Fatalf("forwarded %q; want %q", out.Bytes(), tc.want)
			}
			if rd.Buffered() != len(tc.in)-len(tc.want) {
				t.Fatalf("%d bytes left buffered; want the %d after the run", rd.Buffered(), len(tc.in)-len(tc.want))
			}
		})
	}
}
