// The client side of a session: reading its frames, the read deadline that
// carries idle timeouts and wakes, and handing an idle session to the parker.

package router

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
)

// serve relays the client's messages until it leaves or fails.
func (ss *session) serve() error {
	if ss.raw == nil {
		// Back from parking with a bare descriptor (see detach).
		if err := ss.reattach(); err != nil {
			return fmt.Errorf("resuming a parked client: %w", err)
		}
	}
	if ss.rd == nil {
		ss.openClientIO(ss.conn)
	}
	if ss.rd.Small == nil {
		ss.rd.Small = make([]byte, smallBufSize)
	}
	if err := ss.takePending(ss.rd); err != nil {
		return err
	}
	if err := ss.flushLeftover(); err != nil {
		return err
	}
	young := ss.has(stYoung) // read once, not once per request
	for {
		if ss.resumed {
			// Back from parking: the read deadline armed before (an idle
			// timeout) still stands.
			ss.resumed = false
		} else if err := ss.setReadDeadline(); err != nil {
			return err
		}
		ss.activeTick.Store(ss.srv.parker.tick.Load())
		if ss.has(evPark) {
			parked, err := ss.tryPark()
			if parked || err != nil {
				return cmp.Or(err, errParked)
			}
		}
		if ss.loopCredit == 0 && ss.rd.Buffered() == 0 && ss.srv.parker.enter(ss) {
			return errParked // the relay loop serves it from here
		}
		typ, size, err := ss.rd.Peek()
		if err != nil {
			if isTimeout(err) && !ss.has(evKill) {
				if err := ss.onWake(); err != nil {
					return err
				}
				continue
			}
			var tl *protocol.TooLargeError
			if errors.As(err, &tl) {
				return protocol.Fatal(protocol.SQLStateProtocolViolation,
					"message of "+strconv.Itoa(size)+" bytes exceeds max_packet_size ("+strconv.Itoa(tl.Limit)+")")
			}
			if errors.Is(err, protocol.ErrBadLength) {
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid message length")
			}
			return err
		}
		if young {
			ss.flags.And(^stYoung) // a request: the regular sweep's from now on
			young = false
		}
		if ss.loopCredit != 0 && ss.loopCredit != loopNever {
			ss.loopCredit--
		}
		if err := ss.handle(typ, size); err != nil {
			return err
		}
	}
}

// flushLeftover writes what the relay loop left for the client when it
// handed the session back with the client's socket full, unless a pump
// took the loan (it writes to the client from here).
func (ss *session) flushLeftover() error {
	ss.mu.Lock()
	pumping := ss.pumpDone != nil
	ss.mu.Unlock()
	if pumping || ss.wr.Len() == 0 {
		return nil
	}
	return ss.wr.Flush()
}

// openClientIO makes the client's Reader and Writer on conn (its net.Conn,
// or for the relay loop the bare descriptor's raw calls).
func (ss *session) openClientIO(conn io.ReadWriter) {
	ss.rd = protocol.NewReader(conn)
	ss.rd.MaxMessage = ss.srv.cfg.Load().MaxPacketSize
	ss.wr = protocol.NewWriter(conn)
	ss.countTraffic()
}

// smallBufSize is the size of a session's resident read buffer
// (protocol.Reader.Small). A parked session drops it: a sync.Pool would keep
// a wave of parked sessions' buffers alive through the next garbage
// collection, and a resumed session allocating 512 bytes costs little.
const smallBufSize = 512

// tryPark hands an idle session to the parker when a sweep asked for it
// and the session really is idle: nothing buffered from the client, no
// server, no pump, nothing to deliver, no wake pending. It reports whether
// the parker took it; the session's goroutine must then end at once. An
// error means the session let go of its socket and could not take it back.
func (ss *session) tryPark() (bool, error) {
	ss.flags.And(^evPark)
	if ss.fd < 0 || ss.rd.Buffered() != 0 || ss.has(evWake|evKill) || ss.srv.isDraining() {
		return false, nil
	}
	ss.mu.Lock()
	idle := ss.server == nil && ss.noPumpLocked() && ss.mailLen() == 0 && ss.dead == nil
	ss.mu.Unlock()
	if !idle || (!ss.noDeadline && ss.idleDeadline.IsZero()) {
		return false, nil // a deadline other than client_idle_timeout is armed
	}
	if ss.tls && ss.tlsHoldsInput() {
		return false, nil
	}
	ss.q = ring{} // owes nothing; a parked session keeps no expectation buffer
	if ss.rare != nil {
		ss.rare.waitTimer = nil
	}
	// A parked session keeps no Reader or Writer either: serve makes new
	// ones when it resumes. They are let go before park, after which another
	// goroutine may resume the session at once.
	rd, wr := ss.rd, ss.wr
	ss.rd, ss.wr = nil, nil
	wr.Release()
	small := rd.DetachSmall() // dropped once parked
	if ss.srv.parker.park(ss) {
		return true, nil
	}
	if ss.raw == nil {
		// park let go of the socket and then could not park: take it back.
		if err := ss.reattach(); err != nil {
			return false, fmt.Errorf("parking failed, and so did taking the client socket back: %w", err)
		}
		rd.Reset(ss.conn)
		wr.Reset(ss.conn)
	}
	rd.Small = small
	ss.rd, ss.wr = rd, wr
	return false, nil
}

// tlsHoldsInput reports whether the TLS layer holds client bytes that the
// Reader has not taken (a record larger than the Reader's last read, or a
// complete one read along with the previous), moving them into the Reader:
// readiness of the socket, which is all a parked session waits for, would
// not announce them. It reads once with a past deadline, which returns
// what TLS holds or times out without touching its state (a timeout is not
// sticky in crypto/tls, and a partial record stays buffered); any other
// error is sticky and the next read reports it. The read deadline is put
// back, or left past if a wake or kill came meanwhile.
func (ss *session) tlsHoldsInput() bool {
	if c, ok := ss.conn.(*tls13.Conn); ok {
		return c.Pending() // it keeps what it holds until the next read
	}
	ss.raw.SetReadDeadline(pastDeadline)
	var b [512]byte
	n, err := ss.conn.Read(b[:])
	ss.raw.SetReadDeadline(ss.idleDeadline.Time())
	if ss.has(evWake | evKill) {
		ss.raw.SetReadDeadline(pastDeadline)
		return true
	}
	if n > 0 {
		if perr := ss.rd.Prefill(b[:n]); perr != nil {
			ss.markDead(perr)
		}
		return true
	}
	return !isTimeout(err)
}

// setReadDeadline arms the idle timeouts for the next client read.
func (ss *session) setReadDeadline() error {
	if ss.has(evWake | evKill) {
		return nil // a wake or a kill is pending; let the read fail at once
	}
	cfg := ss.srv.cfg.Load()
	ss.mu.Lock()
	linked, status := ss.server != nil, ss.status
	ss.mu.Unlock()
	var d time.Duration
	switch {
	case !linked && ss.srv.isDraining():
		// Shutting down: a client idle between transactions is let go
		// after a short grace, so one that just connected or just finished
		// a transaction still gets to send its next query.
		d = drainIdleGrace
	case !linked || status == protocol.TxIdle:
		d = cfg.ClientIdleTimeout.Std()
	default:
		d = cfg.IdleTransactionTimeout.Std()
	}
	if d > 0 {
		deadline := time.Now().Add(d)
		ss.idleDeadline = toMono(deadline)
		ss.noDeadline = false
		err := ss.raw.SetReadDeadline(deadline)
		if ss.has(evWake | evKill) {
			// A wake or a kill posted since the check above may have set
			// its past deadline before this one replaced it.
			ss.raw.SetReadDeadline(pastDeadline)
		}
		return err
	}
	ss.idleDeadline = 0
	if ss.noDeadline {
		// Still cleared: only a wake or a kill (which must stay armed) or a
		// pump's idle_transaction_timeout (cleared by onWake when it fires)
		// set one since.
		return nil
	}
	ss.noDeadline = true
	err := ss.raw.SetReadDeadline(time.Time{})
	if ss.has(evWake | evKill) {
		ss.raw.SetReadDeadline(pastDeadline) // as above
	}
	return err
}

// drainIdleGrace is how long a draining pgferry waits for an idle client's
// next query before closing its session.
const drainIdleGrace = time.Second

// onWake handles an interrupted client read: a wake (shutdown, a lost
// server, notifications) or an idle timeout.
func (ss *session) onWake() error {
	// Clear the deadline before consuming the request: a wake that lands in
	// between sets the deadline again and is seen on the next read.
	ss.raw.SetReadDeadline(time.Time{})
	ss.noDeadline = true
	woken := ss.flags.And(^evWake)&evWake != 0
	ss.mu.Lock()
	dead, linked, status, busy := ss.dead, ss.server != nil, ss.status, ss.q.n > 0
	ss.mu.Unlock()
	if dead != nil {
		return errServerGone
	}
	if doomed := ss.doomed(); doomed != nil {
		return doomed
	}
	if err := ss.deliverNotifications(); err != nil {
		return err
	}
	if woken || busy || ss.idleDeadline.IsZero() || monoNow() < ss.idleDeadline {
		// A wake whose flag was consumed before its deadline landed, or a
		// running query: not an idle timeout. The loop re-arms the right
		// deadline.
		return nil
	}
	return ss.idleTimeout(linked, status)
}

// idleTimeout is what ends a session whose idle read deadline passed.
func (ss *session) idleTimeout(linked bool, status byte) error {
	switch {
	case !linked && ss.srv.isDraining():
		return protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")
	case linked && status != protocol.TxIdle:
		return protocol.Fatal(protocol.SQLStateIdleInTransactionTimeout, "idle_transaction_timeout")
	}
	return protocol.Fatal(protocol.SQLStateProtocolViolation, "client_idle_timeout")
}

// onMidFrameWake handles a read deadline that interrupted a client frame
// still arriving (see wokenMidFrame). Only what must end the session acts
// now: a transaction_timeout, or the idle deadline armed before the frame
// began, which is put back for the rest of the frame. A wake's own work
// (notifications, parking, shutdown) waits for the frame's end: the wake
// flag stays set and frameDone turns it back into a past deadline. Unlike
// onWake it never joins a pump, so it is safe with wmu held.
func (ss *session) onMidFrameWake() error {
	ss.raw.SetReadDeadline(time.Time{})
	ss.mu.Lock()
	linked, status := ss.server != nil, ss.status
	ss.mu.Unlock()
	if doomed := ss.doomed(); doomed != nil {
		return doomed
	}
	if !ss.idleDeadline.IsZero() {
		if monoNow() >= ss.idleDeadline {
			return ss.idleTimeout(linked, status)
		}
		ss.raw.SetReadDeadline(ss.idleDeadline.Time())
	}
	ss.noDeadline = ss.idleDeadline.IsZero()
	return nil
}

// frameDone ends a frame read across wakes: a wake still pending gets its
// past deadline back, so the next read at a frame boundary sees it.
func (ss *session) frameDone() {
	if ss.has(evWake) {
		ss.raw.SetReadDeadline(pastDeadline)
		ss.noDeadline = false
	}
}

// wokenMidFrame reports whether a client read failed on its deadline (a
// wake: a parking request, notifications, shutdown; or an idle timeout)
// while a frame was still arriving. The frame is not lost: after
// onMidFrameWake the read is retried and the Reader resumes it. A kill is
// not retried.
func (ss *session) wokenMidFrame(err error) bool {
	return err != nil && ss.wokenBy(err) // (inlined: err is nil per frame read)
}

// wokenBy is wokenMidFrame for a read that failed with err.
func (ss *session) wokenBy(err error) bool {
	return isTimeout(err) && !isWriteError(err) && !ss.has(evKill)
}

// isWriteError reports whether err is a protocol.WriteError (errors.AsType:
// the target errors.As needs escapes to the heap, an allocation on every
// call, errors or not).
func isWriteError(err error) bool {
	_, ok := errors.AsType[*protocol.WriteError](err)
	return ok
}
