package tls13

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
)

// Limits of RFC 8446 5.1 and 5.2.
const (
	maxPlaintext  = 1 << 14
	maxCiphertext = maxPlaintext + 256
	tagLen        = 16
)

// Record content types.
const (
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
)

// Alert descriptions this package sends or treats specially.
const (
	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertIllegalParameter  = 47
	alertUserCanceled      = 90
	alertInternalError     = 80
)

// maxEmptyRecords is how many records without application data in a row a
// client may send (crypto/tls's limit): each costs a decryption, a
// KeyUpdate two key derivations and perhaps a write, and none gives Read
// anything to return.
const maxEmptyRecords = 16

const handshakeKeyUpdate = 24

// Conn is a TLS 1.3 connection after its handshake (see the package
// comment). As with a net.Conn, one goroutine may read while another
// writes; Park and Resume are for its owner, with neither in flight.
//
// Its socket may be non-blocking (the relay loop's sockio.Raw): a read
// that would block returns sockio.ErrWouldBlock and loses nothing, and a
// record the socket takes only in part is kept whole in tail (see Write
// and Drain), so that no record is ever cut short.
type Conn struct {
	raw   net.Conn
	suite *suite
	in    half // records from the client; Read only
	out   half // records to the client; under wmu
	wmu   sync.Mutex

	// Read's buffer: rbuf[rpos:rend] is what was read and not yet opened;
	// plain is an opened record's data not yet returned. The buffer goes
	// back to its pool as soon as all three are empty.
	rbuf       *[]byte
	rpos, rend int
	plain      []byte
	rerr       error // sticky: the connection cannot be read on
	werr       error // sticky: a record may have been cut short
	empty      int   // records without data received in a row

	// tail is what a non-blocking socket did not take of the records
	// sealed already, sent before anything else; under wmu. Its array is
	// tailp's, from largeBufs, while it holds anything. unsent is its
	// length, for Unsent.
	tail   []byte
	tailp  *[]byte
	unsent atomic.Int32
	// replied: a KeyUpdate of this side's went out since its last
	// application data; under wmu. Requests meanwhile get no other (RFC
	// 8446 4.6.3), so a client that sends them without reading cannot pile
	// up replies that a non-blocking socket would keep in tail.
	replied bool
}

// Read returns application data from the client. A timeout, or
// sockio.ErrWouldBlock from a non-blocking socket, leaves the connection as
// it was (a record half read stays buffered); any other failure is final.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if len(c.plain) > 0 {
			n := copy(p, c.plain)
			c.plain = c.plain[n:]
			c.releaseRead()
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		opened, err := c.openRecord()
		if err != nil {
			c.rerr = err
			c.dropRead()
			continue
		}
		if opened {
			continue
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// Pending reports whether the connection holds client bytes: data not yet
// returned, or part of a record. Socket readiness would not announce the
// first, and Park would drop both.
func (c *Conn) Pending() bool { return len(c.plain) > 0 || c.rend > c.rpos }

// Readable reports whether Read has something to act on without reading
// the socket: data not yet returned, or a whole record read along with an
// earlier one. Socket readiness announces neither; a record in part needs
// the rest from the socket, and its arrival is announced.
func (c *Conn) Readable() bool {
	if len(c.plain) > 0 {
		return true
	}
	n := c.rend - c.rpos
	if n < recordHeader {
		return false
	}
	h := (*c.rbuf)[c.rpos:]
	size := int(binary.BigEndian.Uint16(h[3:]))
	// (A header Read refuses it acts on at once, too.)
	return n >= recordHeader+size || h[0] != typeAppData || size > maxCiphertext
}

// Buffer sizes: most records a client sends are small; a larger record
// moves to a buffer that holds the largest.
const (
	smallBuf = 2 << 10
	largeBuf = recordHeader + maxCiphertext
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

func putBuf(b *[]byte) {
	if cap(*b) == largeBuf {
		largeBufs.Put(b)
	} else {
		smallBufs.Put(b)
	}
}

// releaseRead hands Read's buffer back once it holds nothing.
func (c *Conn) releaseRead() {
	if c.rbuf != nil && len(c.plain) == 0 && c.rpos == c.rend {
		putBuf(c.rbuf)
		// plain too: an empty slice into the buffer would keep it alive.
		c.rbuf, c.rpos, c.rend, c.plain = nil, 0, 0, nil
	}
}

// dropRead hands Read's buffer back after a final failure.
func (c *Conn) dropRead() {
	if c.rbuf != nil {
		putBuf(c.rbuf)
		c.rbuf, c.rpos, c.rend, c.plain = nil, 0, 0, nil
	}
}

// fill reads from the socket into Read's buffer, making room first.
func (c *Conn) fill() error {
	if c.raw == nil {
		return net.ErrClosed
	}
	if c.rbuf == nil {
		c.rbuf = smallBufs.Get().(*[]byte)
	} else if c.rpos > 0 {
		c.rend = copy(*c.rbuf, (*c.rbuf)[c.rpos:c.rend])
		c.rpos = 0
	}
	buf := *c.rbuf
	if c.rend >= recordHeader {
		// The record does not fit: move to a large buffer.
		if need := recordHeader + int(binary.BigEndian.Uint16(buf[3:])); need > len(buf) {
			large := largeBufs.Get().(*[]byte)
			c.rend = copy(*large, buf[:c.rend])
			putBuf(c.rbuf)
			c.rbuf, buf = large, *large
		}
	}
	n, err := c.raw.Read(buf[c.rend:])
	c.rend += n
	if n > 0 {
		return nil // an error comes again on the next read
	}
	if err == nil {
		return nil
	}
	c.releaseRead()
	if isTimeout(err) || err == sockio.ErrWouldBlock {
		return err // a record half read stays buffered
	}
	if errors.Is(err, io.EOF) && c.rend > c.rpos {
		err = io.ErrUnexpectedEOF
	}
	c.rerr = err
	c.dropRead()
	return err
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// alertError is a failure this side detected; the client is sent the
// alert before the connection is given up.
type alertError struct {
	alert uint8
	msg   string
}

func (e *alertError) Error() string { return "tls: " + e.msg }

// openRecord opens the record at the front of Read's buffer, if it is all
// there, and acts on it; it reports whether it opened one.
func (c *Conn) openRecord() (bool, error) {
	if c.rend-c.rpos < recordHeader {
		return false, nil
	}
	buf := (*c.rbuf)[c.rpos:c.rend]
	n := int(binary.BigEndian.Uint16(buf[3:]))
	if buf[0] != typeAppData {
		return false, c.fail(&alertError{alertUnexpectedMessage, "client sent a record of type " + strconv.Itoa(int(buf[0])) + " after the handshake"})
	}
	if n > maxCiphertext {
		return false, c.fail(&alertError{alertRecordOverflow, "client sent an oversized record"})
	}
	if len(buf) < recordHeader+n {
		return false, nil
	}
	aead, err := c.in.cipher(c.suite)
	if err != nil {
		return false, err
	}
	if c.in.seq == spentSeq {
		// The number is never used, so the counter never wraps (as in
		// crypto/tls and OpenSSL); a client must update its keys first.
		return false, c.fail(&alertError{alertInternalError, "client records exhausted the sequence numbers"})
	}
	pt, err := aead.Open(buf[recordHeader:recordHeader], c.in.nonce(), buf[recordHeader:recordHeader+n], buf[:recordHeader])
	if err != nil {
		return false, c.fail(&alertError{alertBadRecordMAC, "client record failed authentication"})
	}
	c.in.seq++
	c.rpos += recordHeader + n
	if len(pt) > maxPlaintext+1 {
		return false, c.fail(&alertError{alertRecordOverflow, "client sent an oversized record"})
	}
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return false, c.fail(&alertError{alertUnexpectedMessage, "client sent a record without a content type"})
	}
	typ, pt := pt[i], pt[:i]
	// Records that carry no data (empty ones, warnings, KeyUpdates) cost
	// work and return nothing to Read: a run of them is bounded, as in
	// crypto/tls.
	if typ == typeAppData && len(pt) > 0 {
		c.empty = 0
	} else if c.empty++; c.empty > maxEmptyRecords {
		return false, c.fail(&alertError{alertUnexpectedMessage, "client sent too many records without data"})
	}
	switch typ {
	case typeAppData:
		c.plain = pt
	case typeAlert:
		if len(pt) != 2 {
			return false, c.fail(&alertError{alertUnexpectedMessage, "client sent a malformed alert"})
		}
		switch pt[1] {
		case alertCloseNotify:
			return false, io.EOF
		case alertUserCanceled:
			// A warning; the close_notify that follows ends the connection.
		default:
			// A fatal alert: nothing more goes to the client either.
			c.wmu.Lock()
			c.werr = tls.AlertError(pt[1])
			c.wmu.Unlock()
			return false, tls.AlertError(pt[1])
		}
	case typeHandshake:
		if err := c.handshakeMessage(pt); err != nil {
			return false, err
		}
	default:
		return false, c.fail(&alertError{alertUnexpectedMessage, "client sent a record of content type " + strconv.Itoa(int(typ))})
	}
	c.releaseRead()
	return true, nil
}

// handshakeMessage handles a post-handshake message: only KeyUpdate is
// one a client may send to this server. It must be the whole record: RFC
// 8446 5.1 has a KeyUpdate end its record, as the next one uses new keys,
// on pain of unexpected_message; and no TLS stack splits its five bytes
// across records, which 5.1 allows, so this package does not put them
// together again.
func (c *Conn) handshakeMessage(m []byte) error {
	if len(m) == 0 || m[0] != handshakeKeyUpdate {
		return c.fail(&alertError{alertUnexpectedMessage, "client sent an unexpected handshake message after the handshake"})
	}
	if len(m) >= 4 && (m[1] != 0 || m[2] != 0 || m[3] != 1) {
		return c.fail(&alertError{alertDecodeError, "client sent a malformed KeyUpdate"})
	}
	if len(m) != 5 {
		return c.fail(&alertError{alertUnexpectedMessage, "client sent a KeyUpdate that is not its record's whole content"})
	}
	requested := m[4]
	if requested > 1 {
		return c.fail(&alertError{alertIllegalParameter, "client sent a KeyUpdate with an invalid request"})
	}
	c.in.update(c.suite)
	if requested == 1 {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if c.werr != nil || c.replied {
			return nil // (writes fail anyway; or one reply answers every request before our next data)
		}
		if err := c.writeRecord(typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 0}); err != nil {
			// The failure is the writing side's, as in crypto/tls
			// (handleKeyUpdate): the next Write reports it, and Read goes
			// on. Returned here, a write timeout would be a read timeout
			// that Read then returned forever, though a timeout promises
			// to leave the connection as it was.
			if c.werr == nil {
				c.werr = err // (a parked Conn: nothing was sealed)
			}
			return nil
		}
		c.out.update(c.suite)
		c.replied = true
	}
	return nil
}

// fail sends the client the alert of e, if it can, and returns e: the
// connection is over.
func (c *Conn) fail(e *alertError) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		c.writeRecord(typeAlert, []byte{2, e.alert})
		c.werr = e
	}
	return e
}

// Write sends p as application data, in records of at most 16 KiB. A
// failure of any kind is final: a record may have gone out in part. On a
// non-blocking socket, Write first sends what an earlier one left unsent;
// when the socket takes a record only in part, Write keeps the rest (see
// Drain) and returns sockio.ErrWouldBlock with n counting that record's
// data as written: it is sealed, and goes out before anything else.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if len(c.tail) > 0 {
		if err := c.drainLocked(); err != nil {
			return 0, err
		}
	}
	n := 0
	for len(p) > 0 {
		m := min(len(p), maxPlaintext)
		if err := c.writeRecord(typeAppData, p[:m]); err != nil {
			return n, err
		}
		c.replied = false
		n += m
		p = p[m:]
		if len(c.tail) > 0 {
			return n, sockio.ErrWouldBlock
		}
	}
	return n, nil
}

// Unsent reports how many bytes of sealed records a non-blocking socket
// has not taken yet (see Write). Any goroutine may ask.
func (c *Conn) Unsent() int { return int(c.unsent.Load()) }

// Drain sends what Write left unsent. It returns sockio.ErrWouldBlock if
// the socket still does not take all of it; any other failure is final.
func (c *Conn) Drain() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.drainLocked()
}

// drainLocked is Drain with wmu held.
func (c *Conn) drainLocked() error {
	for len(c.tail) > 0 {
		if c.raw == nil {
			return net.ErrClosed
		}
		n, err := c.raw.Write(c.tail)
		c.tail = c.tail[n:]
		c.unsent.Store(int32(len(c.tail)))
		if err != nil {
			if err != sockio.ErrWouldBlock {
				c.werr = err
			}
			return err
		}
	}
	c.dropTail()
	return nil
}

// hold keeps b, the unsent end of a sealed record, behind whatever is
// unsent already. wmu is held.
func (c *Conn) hold(b []byte) {
	if c.tailp == nil {
		c.tailp = largeBufs.Get().(*[]byte)
		c.tail = (*c.tailp)[:0]
	}
	c.tail = append(c.tail, b...) // (past one record, a new array: rare)
	c.unsent.Store(int32(len(c.tail)))
}

// dropTail hands the tail's buffer back. wmu is held.
func (c *Conn) dropTail() {
	if c.tailp != nil {
		largeBufs.Put(c.tailp)
	}
	c.tail, c.tailp = nil, nil
	c.unsent.Store(0)
}

// writeRecord seals one record and writes it. wmu is held.
func (c *Conn) writeRecord(typ byte, data []byte) error {
	if c.raw == nil {
		return net.ErrClosed
	}
	aead, err := c.out.cipher(c.suite)
	if err != nil {
		c.werr = err
		return err
	}
	if c.out.seq == spentSeq {
		// pgferry does not update its keys on its own: the connection ends
		// before a nonce could repeat.
		c.werr = errors.New("tls13: sequence numbers exhausted")
		return c.werr
	}
	size := recordHeader + len(data) + 1 + tagLen
	bp := smallBufs.Get().(*[]byte)
	if size > len(*bp) {
		smallBufs.Put(bp)
		bp = largeBufs.Get().(*[]byte)
	}
	defer putBuf(bp)
	b := (*bp)[:size]
	b[0], b[1], b[2] = typeAppData, 3, 3 // every record is application_data outside
	binary.BigEndian.PutUint16(b[3:], uint16(len(data)+1+tagLen))
	copy(b[recordHeader:], data)
	b[recordHeader+len(data)] = typ
	aead.Seal(b[recordHeader:recordHeader], c.out.nonce(), b[recordHeader:recordHeader+len(data)+1], b[:recordHeader])
	// The sequence number moves on before the write: a record that failed
	// to go out may have gone out in part, and its nonce is spent.
	c.out.seq++
	if len(c.tail) > 0 {
		c.hold(b) // (a KeyUpdate or an alert behind unsent data)
		return nil
	}
	n, err := c.raw.Write(b)
	if err == sockio.ErrWouldBlock {
		c.hold(b[n:]) // the rest of the record, whole (see Write)
		return nil
	}
	if err != nil {
		c.werr = err
		return err
	}
	return nil
}

// spentSeq is the one sequence number never used: a half reaching it is
// spent.
const spentSeq = math.MaxUint64

// Close sends close_notify, if nothing failed, and closes the socket. With
// a write in flight, perhaps stuck on a client that does not read, it
// closes the socket at once, which ends the write, and sends nothing (as
// crypto/tls does).
func (c *Conn) Close() error {
	if !c.wmu.TryLock() {
		if c.raw == nil {
			return net.ErrClosed
		}
		return c.raw.Close()
	}
	if c.werr == nil && c.raw != nil {
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		c.writeRecord(typeAlert, []byte{1, alertCloseNotify})
		c.werr = net.ErrClosed
	}
	c.wmu.Unlock()
	if c.raw == nil {
		return net.ErrClosed
	}
	return c.raw.Close()
}

// Park lets go of the socket and of everything the connection can make
// again: its AEADs (its buffers went back to their pools when emptied).
// It keeps the secrets, keys and sequence numbers. Nothing may be Pending
// or Unsent.
func (c *Conn) Park() {
	c.wmu.Lock()
	c.raw = nil
	c.in.aead, c.out.aead = nil, nil
	c.wmu.Unlock()
	c.plain = nil
}

// Resume gives a parked connection its socket again.
func (c *Conn) Resume(raw net.Conn) { c.raw = raw }

// Wipe overwrites the keys of a connection that is done, and closes it for
// reading and writing (not its socket). Best effort: copies made on the
// way (crypto/tls's key log lines, the HMAC states and outputs of every
// key derivation, crypto/tls's and this package's alike, the expanded AES
// keys inside the AEADs) are garbage the runtime does not clear.
func (c *Conn) Wipe() {
	c.wmu.Lock()
	c.in.wipe()
	c.out.wipe()
	c.raw = nil
	c.werr = net.ErrClosed
	c.dropTail()
	c.wmu.Unlock()
	c.rerr = net.ErrClosed
	c.dropRead()
}

// Describe names the protocol version and cipher suite, as SHOW CLIENTS
// shows them.
func (c *Conn) Describe() string {
	return tls.VersionName(tls.VersionTLS13) + "/" + tls.CipherSuiteName(c.suite.id)
}

func (c *Conn) LocalAddr() net.Addr {
	if c.raw == nil {
		return nil
	}
	return c.raw.LocalAddr()
}

func (c *Conn) RemoteAddr() net.Addr {
	if c.raw == nil {
		return nil
	}
	return c.raw.RemoteAddr()
}

func (c *Conn) SetDeadline(t time.Time) error      { return c.deadline(net.Conn.SetDeadline, t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.deadline(net.Conn.SetReadDeadline, t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.deadline(net.Conn.SetWriteDeadline, t) }

func (c *Conn) deadline(set func(net.Conn, time.Time) error, t time.Time) error {
	if c.raw == nil {
		return net.ErrClosed
	}
	return set(c.raw, t)
}
