package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pgferry/pgferry/internal/sockio"
)

// BufferSize is the size of each connection's read buffer. It matches
// PostgreSQL's own PQ_RECV_BUFFER_SIZE (src/backend/libpq/pqcomm.c), so a
// frame PostgreSQL could send in one recv fits in one of ours.
const BufferSize = 8192

// headerSize is the type byte plus the int32 length of a regular message.
const headerSize = 5

// ErrBadLength means a frame's length field was below 4, which cannot be a
// valid PostgreSQL message: the stream is out of sync.
var ErrBadLength = errors.New("invalid message length")

// ErrWouldBlock is what a non-blocking source or destination returns when
// it has no bytes to give or no room to take them (EAGAIN). A Reader keeps
// what it read before it, and a Writer the bytes not yet written, so the
// caller retries the same call once the socket is ready.
var ErrWouldBlock = sockio.ErrWouldBlock

// TooLargeError reports a frame longer than the reader's limit. The frame was
// not buffered.
type TooLargeError struct {
	Type  byte
	Size  int
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("message of type %q is %d bytes, over the limit of %d", e.Type, e.Size, e.Limit)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// GetBuffer takes an 8 KiB buffer from the shared pool.
func GetBuffer() *[]byte { return bufPool.Get().(*[]byte) }

// PutBuffer returns a buffer taken with GetBuffer.
func PutBuffer(b *[]byte) {
	if b != nil && cap(*b) == BufferSize {
		*b = (*b)[:BufferSize]
		bufPool.Put(b)
	}
}

// Reader reads PostgreSQL frames from a connection into an 8 KiB buffer. It
// is not safe for concurrent use.
//
// Frames are handed out as slices of the buffer, valid until the next call
// on the Reader. A Reader holds its buffer only while it has unread bytes or
// is mid-call: when it is drained and a Wait function is set, it returns the
// buffer to the shared pool before blocking, so idle connections cost no
// buffer memory.
type Reader struct {
	src  io.Reader
	bufp *[]byte
	buf  []byte
	r, w int
	big  []byte // holds a whole frame larger than buf; dropped after use
	// part holds the start of a frame larger than buf whose reading or
	// streaming a read error interrupted (a deadline set to wake the
	// caller, typically): its header and the bytes read so far, which were
	// consumed from buf. The next call on the frame resumes from there.
	part []byte
	// streamed counts the bytes of a frame larger than buf that Forward or
	// Discard passed on before a read error; hdr is that frame's header.
	streamed int
	hdr      [headerSize]byte

	// Wait, when set, blocks until src is readable (or fails). The Reader
	// calls it with its buffer released whenever it has nothing buffered.
	Wait func() error
	// Small, when set, is a small buffer the Reader owns for good: reads
	// land in it while frames are small, and the pooled 8 KiB buffer is
	// taken only for larger frames and given back as soon as the Reader is
	// drained. An idle connection then holds only Small, and a request-
	// response client costs one read per message instead of a readiness
	// wait plus a read.
	Small []byte
	// MaxMessage bounds a frame's total size; 0 means 1 GiB (PostgreSQL's
	// own MaxAllocSize for a message).
	MaxMessage int
	// Count, when set, adds up the bytes read from src (SHOW STATS'
	// total_received); its owner may read it from any goroutine.
	Count *atomic.Uint64
}

// NewReader returns a Reader over src. Call Release when done with it.
func NewReader(src io.Reader) *Reader { return &Reader{src: src} }

// Reset points the Reader at a new source and drops buffered data.
func (rd *Reader) Reset(src io.Reader) {
	rd.src = src
	rd.r, rd.w = 0, 0
	rd.big, rd.part, rd.streamed = nil, nil, 0
}

// Release returns the buffer to the shared pool; buffered bytes are lost.
func (rd *Reader) Release() {
	if rd.bufp != nil {
		PutBuffer(rd.bufp)
		rd.bufp, rd.buf = nil, nil
	}
	rd.r, rd.w = 0, 0
	rd.big, rd.part, rd.streamed = nil, nil, 0
}

// DetachSmall releases the Reader's buffers and hands back Small (nil if
// none), for a caller that keeps it elsewhere while the connection is idle;
// set Small again before the next read. Buffered bytes are lost.
func (rd *Reader) DetachSmall() []byte {
	rd.Release()
	s := rd.Small
	rd.Small, rd.buf = nil, nil
	return s
}

// Prefill adds b to the Reader's buffered bytes, after any already there,
// as if read from the source: bytes an earlier reader of the same
// connection took in and did not consume. b is copied. It fails when the
// Reader is mid-frame or the bytes would not fit in BufferSize.
func (rd *Reader) Prefill(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if rd.part != nil || rd.streamed > 0 || rd.w-rd.r+len(b) > BufferSize {
		return fmt.Errorf("protocol: cannot prefill %d bytes", len(b))
	}
	rd.makeRoom(rd.w - rd.r + len(b))
	rd.w += copy(rd.buf[rd.w:], b)
	return nil
}

// FillFrame reads until the frame Peek sized (size bytes, at most
// BufferSize) is buffered whole, and returns it without consuming it: the
// next NextPeeked or ForwardPeeked takes it without reading. The slice is
// valid until then. On an error the bytes read so far stay buffered.
func (rd *Reader) FillFrame(size int) ([]byte, error) {
	if rd.part != nil || rd.streamed > 0 || size > BufferSize {
		return nil, fmt.Errorf("protocol: cannot buffer a frame of %d bytes whole", size)
	}
	if rd.w-rd.r < size {
		if err := rd.fill(size); err != nil {
			return nil, err
		}
	}
	return rd.buf[rd.r : rd.r+size], nil
}

// ErrBufferFull is ReadMore's answer when BufferSize bytes are buffered
// already (or a frame larger than the buffer is in progress).
var ErrBufferFull = errors.New("protocol: read buffer full")

// ReadMore reads once from the source into the room after what is
// buffered, keeping it all (frames peeked or filled stay where they are
// for the next call), and reports how many bytes it read: a caller that
// waits for something else takes in what a client sends meanwhile. It
// fails with ErrBufferFull when BufferSize bytes are buffered, and with
// the source's error (ErrWouldBlock, io.EOF) otherwise.
func (rd *Reader) ReadMore() (int, error) {
	n := rd.w - rd.r
	if rd.part != nil || rd.streamed > 0 || n >= BufferSize {
		return 0, ErrBufferFull
	}
	rd.makeRoom(n + 1) // (Small's room first: a pooled buffer once it is full)
	m, err := rd.src.Read(rd.buf[rd.w:])
	rd.w += m
	if rd.Count != nil && m > 0 {
		rd.Count.Add(uint64(m))
	}
	if m > 0 {
		return m, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, err
}

// SetSource points the Reader at a new source of the same stream, keeping
// what it has buffered (a socket moving between blocking and non-blocking
// readers).
func (rd *Reader) SetSource(src io.Reader) { rd.src = src }

// makeRoom gives the Reader a buffer (Small, or a pooled one) in which n
// bytes fit from rd.r on, growing or compacting it as needed; n <=
// BufferSize.
func (rd *Reader) makeRoom(n int) {
	if rd.buf == nil {
		if rd.Small != nil {
			rd.buf = rd.Small
		} else {
			rd.bufp = GetBuffer()
			rd.buf = *rd.bufp
		}
	}
	if len(rd.buf) < n {
		rd.grow()
	} else if rd.r > 0 && len(rd.buf)-rd.r < n {
		rd.w = copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.r = 0
	}
}

// HoldsBuffer reports whether the Reader holds a pooled buffer.
func (rd *Reader) HoldsBuffer() bool { return rd.bufp != nil }

// Buffered reports how many unread bytes are buffered, including those of
// an interrupted large frame.
func (rd *Reader) Buffered() int { return rd.w - rd.r + len(rd.part) + rd.streamed }

// Lookahead returns the bytes buffered past what was read, without reading
// them (nil while a frame larger than the buffer is part read): the frames
// a peer sent behind the last one, as far as they have come. The slice is
// valid until the next call on the Reader.
func (rd *Reader) Lookahead() []byte {
	if rd.part != nil || rd.streamed > 0 {
		return nil
	}
	return rd.buf[rd.r:rd.w]
}

func (rd *Reader) limit() int {
	if rd.MaxMessage > 0 {
		return rd.MaxMessage
	}
	return maxFrame
}

// maxFrame is the largest frame without MaxMessage: 1 GiB.
const maxFrame = 1 << 30

// fill makes at least n bytes available, n <= BufferSize.
func (rd *Reader) fill(n int) error {
	for rd.w-rd.r < n {
		if rd.r == rd.w {
			rd.r, rd.w = 0, 0
			if rd.bufp != nil && (rd.Wait != nil || rd.Small != nil) {
				PutBuffer(rd.bufp)
				rd.bufp, rd.buf = nil, nil
			}
			if rd.Wait != nil {
				if err := rd.Wait(); err != nil {
					return err
				}
			}
		}
		rd.makeRoom(n)
		m, err := rd.src.Read(rd.buf[rd.w:])
		rd.w += m
		if rd.Count != nil && m > 0 {
			rd.Count.Add(uint64(m))
		}
		if err != nil {
			if rd.w-rd.r >= n {
				return nil
			}
			if err == io.EOF && rd.w-rd.r > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// grow moves buffered bytes from Small into a pooled 8 KiB buffer.
func (rd *Reader) grow() {
	bp := GetBuffer()
	nb := *bp
	m := copy(nb, rd.buf[rd.r:rd.w])
	rd.bufp, rd.buf, rd.r, rd.w = bp, nb, 0, m
}

// Peek waits for the next frame's header and returns its type and total size
// (type byte and length included). It consumes nothing.
func (rd *Reader) Peek() (typ byte, size int, err error) {
	if rd.part != nil {
		return rd.part[0], partSize(rd.part), nil
	}
	if rd.streamed > 0 {
		return rd.hdr[0], partSize(rd.hdr[:]), nil
	}
	if rd.w-rd.r < headerSize {
		if err := rd.fill(headerSize); err != nil {
			return 0, 0, err
		}
	}
	h := rd.buf[rd.r : rd.r+headerSize]
	typ = h[0]
	l := int(int32(binary.BigEndian.Uint32(h[1:])))
	if l < 4 {
		return typ, 0, ErrBadLength
	}
	size = l + 1
	if size > maxFrame || (rd.MaxMessage > 0 && size > rd.MaxMessage) {
		return typ, size, &TooLargeError{Type: typ, Size: size, Limit: rd.limit()}
	}
	return typ, size, nil
}

// Next reads the whole next frame, header included. The slice is valid until
// the next call on the Reader. A frame larger than the buffer is read into a
// temporary buffer that is dropped on the following call.
func (rd *Reader) Next() ([]byte, error) {
	rd.big = nil
	_, size, err := rd.Peek()
	if err != nil {
		return nil, err
	}
	return rd.NextPeeked(size)
}

// NextPeeked is Next for a caller that has just called Peek, which returned
// size without error: it does not decode the header again.
func (rd *Reader) NextPeeked(size int) ([]byte, error) {
	rd.big = nil
	if rd.streamed > 0 {
		return nil, errPartlyStreamed
	}
	if size <= BufferSize { // (part and streamed are only ever larger frames)
		if rd.w-rd.r < size {
			if err := rd.fill(size); err != nil {
				return nil, err
			}
		}
		f := rd.buf[rd.r : rd.r+size]
		rd.r += size
		return f, nil
	}
	// The length comes from the peer: grow the frame's buffer as its bytes
	// arrive instead of allocating the claimed size up front, so a header
	// announcing a huge message costs memory only for what is really sent.
	big := rd.part
	rd.part = nil
	if big == nil {
		big = make([]byte, 0, min(size, bigChunk))
		big = append(big, rd.buf[rd.r:rd.w]...)
		rd.r = rd.w
	}
	for len(big) < size {
		if len(big) == cap(big) {
			big = slices.Grow(big, min(size, 2*cap(big))-len(big))
		}
		m, err := rd.src.Read(big[len(big):min(size, cap(big))])
		big = big[:len(big)+m]
		if err != nil && len(big) < size {
			rd.part = big // a retry resumes here
			return nil, noEOF(err)
		}
	}
	rd.big = big
	return rd.big, nil
}

// errPartlyStreamed: a frame that Forward began to stream cannot be read
// whole any more.
var errPartlyStreamed = errors.New("protocol: frame already partly forwarded")

// partSize is the total size of the frame whose start part holds.
func partSize(part []byte) int {
	return int(int32(binary.BigEndian.Uint32(part[1:headerSize]))) + 1
}

// bigChunk is the first allocation for a frame larger than the buffer; the
// allocation doubles from there as the frame's bytes arrive.
const bigChunk = 64 << 10

// Forward copies the next frame to w without decoding it. A frame that fits
// in the buffer is appended to w's buffer; a larger one is streamed: w is
// flushed and the frame is copied through the read buffer chunk by chunk, so
// memory stays bounded whatever its size.
func (rd *Reader) Forward(w *Writer) error {
	rd.big = nil
	_, size, err := rd.Peek()
	if err != nil {
		return err
	}
	return rd.ForwardPeeked(w, size)
}

// ForwardPeeked is Forward for a caller that has just called Peek, which
// returned size without error.
func (rd *Reader) ForwardPeeked(w *Writer, size int) error {
	rd.big = nil
	if size <= BufferSize { // (part and streamed are only ever larger frames)
		if rd.w-rd.r < size {
			if err := rd.fill(size); err != nil {
				return err
			}
		}
		w.take()
		w.buf = append(w.buf, rd.buf[rd.r:rd.r+size]...)
		rd.r += size
		return nil
	}
	if err := w.Flush(); err != nil {
		return err
	}
	err := rd.stream(size, w.dst)
	if w.Count != nil && err == nil {
		w.Count.Add(uint64(size))
	}
	return err
}

// ForwardRun is ForwardPeeked for a frame of type typ that fits in the
// buffer, which also takes the frames of the same type buffered whole
// right after it (a result's DataRows, COPY's CopyData), in one copy.
func (rd *Reader) ForwardRun(w *Writer, typ byte, size int) error {
	if size > BufferSize {
		return rd.ForwardPeeked(w, size)
	}
	rd.big = nil
	if rd.w-rd.r < size {
		if err := rd.fill(size); err != nil {
			return err
		}
	}
	end, limit := rd.r+size, rd.limit()
	for rd.w-end >= headerSize && rd.buf[end] == typ {
		l := int(int32(binary.BigEndian.Uint32(rd.buf[end+1:])))
		if l < 4 || l+1 > BufferSize || l+1 > limit || rd.w-end < l+1 {
			break // (Peek reports a bad one; a cut one is read on)
		}
		end += l + 1
	}
	w.take()
	w.buf = append(w.buf, rd.buf[rd.r:end]...)
	rd.r = end
	return nil
}

// PeekBuffered is Peek without reading: the type and total size of the
// next frame when it is buffered whole and fits in the buffer; ok is false
// otherwise (not all of it read yet, or a frame Peek would report as bad
// or too large).
func (rd *Reader) PeekBuffered() (typ byte, size int, ok bool) {
	b := rd.buf[rd.r:rd.w]
	if len(b) < headerSize || rd.part != nil || rd.streamed > 0 {
		return 0, 0, false
	}
	size = int(binary.BigEndian.Uint32(b[1:headerSize])) + 1 // (a negative int32 is a huge size here)
	if size < headerSize || size > len(b) || size > BufferSize || (rd.MaxMessage > 0 && size > rd.MaxMessage) {
		return 0, 0, false
	}
	return b[0], size, true
}

// Join consumes the next frame, of size bytes, which PeekBuffered found
// buffered whole, and returns prev with it appended in place: prev is the
// frame (or frames) NextPeeked or Join returned last, which it follows in
// the buffer, so a run of frames is relayed as one slice. ok is false,
// and nothing consumed, when prev does not end where the frame begins
// (it was not read from this buffer just before).
func (rd *Reader) Join(prev []byte, size int) (joined []byte, ok bool) {
	if rd.part != nil || rd.streamed > 0 || rd.w-rd.r < size || len(prev) == 0 || cap(prev)-len(prev) < size ||
		&prev[:len(prev)+1][len(prev)] != &rd.buf[rd.r] {
		return prev, false
	}
	rd.r += size
	return prev[:len(prev)+size], true
}

// JoinRun is Join for every frame of type typ buffered whole behind prev
// (a result's DataRows behind its RowDescription): it returns prev with
// them appended in place.
func (rd *Reader) JoinRun(prev []byte, typ byte) []byte {
	for {
		t, size, ok := rd.PeekBuffered()
		if !ok || t != typ {
			return prev
		}
		if prev, ok = rd.Join(prev, size); !ok {
			return prev
		}
	}
}

// Discard skips the next frame. It streams even a small frame, so after
// an error the Reader's resume state may describe a small frame: callers
// end the connection on a Discard error rather than retry.
func (rd *Reader) Discard() error {
	rd.big = nil
	_, size, err := rd.Peek()
	if err != nil {
		return err
	}
	return rd.stream(size, io.Discard)
}

// stream copies size bytes of the current frame to dst through the buffer.
// When a read fails part of the way, the count streamed is kept (with the
// header, for Peek) so that the next call streams the rest.
func (rd *Reader) stream(size int, dst io.Writer) error {
	done := rd.streamed
	rd.streamed = 0
	if rd.part != nil {
		// NextPeeked read the frame's start before an error: pass it on.
		part := rd.part
		rd.part = nil
		copy(rd.hdr[:], part)
		if _, err := dst.Write(part); err != nil {
			return &WriteError{Err: err}
		}
		done = len(part)
	} else if done == 0 {
		copy(rd.hdr[:], rd.buf[rd.r:rd.w]) // Peek made sure it is there
	}
	if rd.bufp == nil {
		rd.grow() // stream through 8 KiB, not through Small
	}
	for done < size {
		if rd.r == rd.w {
			rd.r, rd.w = 0, 0
			m, err := rd.src.Read(rd.buf)
			rd.w = m
			if rd.Count != nil && m > 0 {
				rd.Count.Add(uint64(m))
			}
			if m == 0 && err != nil {
				rd.streamed = done // a retry resumes here
				return noEOF(err)
			}
		}
		n := min(size-done, rd.w-rd.r)
		if _, err := dst.Write(rd.buf[rd.r : rd.r+n]); err != nil {
			return &WriteError{Err: err}
		}
		rd.r += n
		done += n
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteError marks an error from the destination of a Forward, so callers can
// tell which side of a relay failed.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Writer batches outgoing frames and writes them with one Write per Flush.
// Its buffer comes from a shared pool on first use and goes back on
// Release, so idle connections hold none. It is not safe for concurrent use.
type Writer struct {
	dst  io.Writer
	held Holder // dst, if it may hold bytes it took (see Holder)
	buf  []byte
	bufp *[]byte // pool handle of buf's backing array, nil when released
	// Count, when set, adds up the bytes written to dst (SHOW STATS'
	// total_sent); its owner may read it from any goroutine.
	Count *atomic.Uint64
}

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledWrite bounds the buffers returned to the pool: a buffer a large
// message grew beyond it is dropped.
const maxPooledWrite = 64 << 10

// Holder is a non-blocking destination that may take bytes it cannot send
// yet: a TLS connection keeps the rest of a record its socket took in part
// (tls13.Conn), and reports ErrWouldBlock. A Writer counts what it holds as
// pending (Len), and Flush drains it.
type Holder interface {
	Unsent() int
	Drain() error
}

// NewWriter returns a Writer to dst.
func NewWriter(dst io.Writer) *Writer {
	w := &Writer{}
	w.SetDest(dst)
	return w
}

// SetDest points the Writer at a new destination of the same stream,
// keeping pending bytes.
func (w *Writer) SetDest(dst io.Writer) {
	w.dst = dst
	w.held, _ = dst.(Holder)
}

// Reset points the Writer at a new destination and drops pending bytes.
func (w *Writer) Reset(dst io.Writer) { w.SetDest(dst); w.buf = w.buf[:0] }

func (w *Writer) take() {
	if w.bufp == nil {
		w.bufp = writeBufPool.Get().(*[]byte)
		w.buf = (*w.bufp)[:0]
	}
}

// Append queues raw frame bytes.
func (w *Writer) Append(b []byte) {
	w.take()
	w.buf = append(w.buf, b...)
}

// Buffer exposes the pending bytes for encoders that append in place:
// w.SetBuffer(msg.Encode(w.Buffer())).
func (w *Writer) Buffer() []byte {
	w.take()
	return w.buf
}

// SetBuffer replaces the pending bytes (see Buffer).
func (w *Writer) SetBuffer(b []byte) { w.buf = b }

// HoldsBuffer reports whether the Writer holds a pooled buffer.
func (w *Writer) HoldsBuffer() bool { return w.bufp != nil }

// Len reports how many bytes are pending, counting those the destination
// holds (see Holder).
func (w *Writer) Len() int {
	if w.held != nil {
		return len(w.buf) + w.held.Unsent()
	}
	return len(w.buf)
}

// Flush writes pending bytes. When the destination returns ErrWouldBlock,
// the bytes it did not take stay pending and Flush returns ErrWouldBlock
// itself (not wrapped): the next Flush goes on from there.
func (w *Writer) Flush() error {
	if len(w.buf) == 0 {
		if w.held == nil || w.held.Unsent() == 0 {
			return nil
		}
		err := w.held.Drain()
		if err != nil && err != ErrWouldBlock {
			return &WriteError{Err: err}
		}
		return err
	}
	n, err := w.dst.Write(w.buf)
	if w.Count != nil && n > 0 {
		w.Count.Add(uint64(n))
	}
	if err == ErrWouldBlock {
		w.buf = w.buf[:copy(w.buf, w.buf[n:])] // the rest, for the next Flush
		return err
	}
	w.buf = w.buf[:0]
	if cap(w.buf) > maxPooledWrite {
		// A large message grew the buffer: do not keep it.
		w.buf, w.bufp = nil, nil
	}
	if err != nil {
		return &WriteError{Err: err}
	}
	return nil
}

// Release returns the buffer to the pool; pending bytes are dropped. Call
// it when the connection goes idle.
func (w *Writer) Release() {
	if w.bufp != nil && cap(w.buf) <= maxPooledWrite {
		*w.bufp = w.buf[:0]
		writeBufPool.Put(w.bufp)
	}
	w.buf, w.bufp = nil, nil
}

// HasFrame reports whether a whole frame is buffered, so reading it will not
// block. Callers flush their writes before a read that may block.
func (rd *Reader) HasFrame() bool {
	if rd.part != nil || rd.streamed > 0 {
		return false
	}
	n := rd.w - rd.r
	if n < headerSize {
		return false
	}
	l := int(int32(binary.BigEndian.Uint32(rd.buf[rd.r+1:])))
	return n >= l+1
}
