package protocol

import (
	"bytes"
	"testing"
)

func TestJoinRelaysARunOfBufferedFramesAsOneSlice(t *testing.T) {
	parsed, bound, described := frame('1', ""), frame('2', ""), frame('T', "\x00\x00")
	row := frame('D', "\x00\x01\x00\x00\x00\x011")
	in := bytes.Join([][]byte{parsed, bound, described, row}, nil)
	rd := NewReader(bytes.NewReader(in))
	defer rd.Release()

	typ, size, err := rd.Peek()
	if err != nil || typ != '1' {
		t.Fatalf("Peek = %q, %v", typ, err)
	}
	run, err := rd.NextPeeked(size)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []byte{'2', 'T'} {
		typ, size, ok := rd.PeekBuffered()
		if !ok || typ != want {
			t.Fatalf("PeekBuffered = %q, %v; want %q buffered whole", typ, ok, want)
		}
		if run, ok = rd.Join(run, size); !ok {
			t.Fatalf("Join of the %q that follows the run failed", want)
		}
	}
	if want := in[:len(in)-len(row)]; !bytes.Equal(run, want) {
		t.Fatalf("the run is %q, want %q", run, want)
	}
	got, err := rd.Next()
	if err != nil || !bytes.Equal(got, row) {
		t.Fatalf("after the run, Next = %q, %v; want the DataRow %q", got, err, row)
	}
}

func TestPeekBufferedSaysNoToAFrameNotReadWhole(t *testing.T) {
	whole := frame('1', "")
	cut := frame('T', "\x00\x01col\x00")
	rd := NewReader(bytes.NewReader(append(append([]byte(nil), whole...), cut[:len(cut)-2]...)))
	defer rd.Release()
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if typ, _, ok := rd.PeekBuffered(); ok {
		t.Fatalf("PeekBuffered found a %q frame whole that lacks its last two bytes", typ)
	}
}

func TestJoinRefusesAFrameThatDoesNotFollowTheRun(t *testing.T) {
	in := append(frame('1', ""), frame('2', "")...)
	rd := NewReader(bytes.NewReader(in))
	defer rd.Release()
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	_, size, ok := rd.PeekBuffered()
	if !ok {
		t.Fatal("the BindComplete is not buffered whole")
	}
	elsewhere := make([]byte, 5, 64) // not read from this Reader
	if joined, ok := rd.Join(elsewhere, size); ok || len(joined) != 5 {
		t.Fatalf("Join appended a frame to a slice it does not follow (%d bytes)", len(joined))
	}
	if got, err := rd.Next(); err != nil || !bytes.Equal(got, frame('2', "")) {
		t.Fatalf("the refused Join consumed the frame: Next = %q, %v", got, err)
	}
}

func TestJoinRunTakesTheRowsBufferedBehindTheRowDescription(t *testing.T) {
	described, row := frame('T', "\x00\x00"), frame('D', "\x00\x01\x00\x00\x00\x011")
	done := frame('C', "SELECT 2\x00")
	in := bytes.Join([][]byte{described, row, row, done}, nil)
	rd := NewReader(bytes.NewReader(in))
	defer rd.Release()
	first, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	run := rd.JoinRun(first, 'D')
	if want := in[:len(in)-len(done)]; !bytes.Equal(run, want) {
		t.Fatalf("the run is %q, want the RowDescription and both rows %q", run, want)
	}
	if got, err := rd.Next(); err != nil || !bytes.Equal(got, done) {
		t.Fatalf("after the run, Next = %q, %v; want the CommandComplete", got, err)
	}
}
