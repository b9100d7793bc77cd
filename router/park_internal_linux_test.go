//go:build linux && !pgferry_nopark

package router

import (
	"os"
	"testing"

	"go.uber.org/zap"
)

func TestClosingTheParkerTwiceLeavesFilesOpenedMeanwhileAlone(t *testing.T) {
	p := &parker{srv: &Server{log: zap.NewNop()}}
	if !p.start() {
		t.Skip("epoll is not available")
	}
	p.close()
	// Files opened now get the numbers the parker's epoll set and pipe
	// had; a second close must not write to or close them.
	type pipe struct{ r, w *os.File }
	var pipes []pipe
	for range 4 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes = append(pipes, pipe{r, w})
		defer r.Close()
		defer w.Close()
	}
	p.close()
	for i, pp := range pipes {
		if _, err := pp.w.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatalf("pipe %d opened after the first close: %v", i, err)
		}
		b := make([]byte, 8)
		n, err := pp.r.Read(b)
		if err != nil || n != 1 || b[0] != byte('a'+i) {
			t.Fatalf("pipe %d opened after the first close read %q, %v; want only its own byte", i, b[:n], err)
		}
	}
}
