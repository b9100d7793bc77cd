//go:build linux && !pgferry_nopark

// How a session of the relay loop waits between its steps: the sockets it
// waits for registered in the loop's epoll set (await; a server's
// registration kept from one loan to the next: dropServer), and the loop's
// sessions idle for a sweep interval parked (settleLooped, rearmParked).

package router

import (
	"syscall"

	"github.com/pgferry/pgferry/internal/epoll"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// await registers the sockets the session now waits for (see the loop
// states) and puts the session in the parked set, where their events find
// it. op is EPOLL_CTL_ADD for a client socket entering the loop (0 or MOD
// otherwise); a server socket is added to the set once (see dropServer)
// and re-armed at each wait after. It reports false if the parker is closing or epoll failed: the caller
// keeps the session.
func (p *parker) await(ss *session, state uint8, op int) bool {
	armed := ss.loop&loopArmed != 0
	ss.loop = state
	client := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	var server syscall.EpollEvent
	var sc *pool.ServerConn
	srvFD, srvOp := -1, syscall.EPOLL_CTL_MOD
	switch state {
	case loopClient, loopGroup:
		if ss.tlsReadable() || ss.wr.Len() > 0 {
			// TLS holds a request already read from the socket, whose
			// readiness would not announce it, or a record of its own
			// that a read made (a KeyUpdate's answer) waits for room:
			// room to write comes at once, or when the client reads, and
			// turn then reads the request or writes the record (request).
			client.Events |= syscall.EPOLLOUT
			armed = false
		}
	case loopClientOut, loopRelayOut:
		client.Events = syscall.EPOLLOUT | syscall.EPOLLONESHOT
		armed = false
	case loopQueued:
		if ss.rd.Buffered() >= protocol.BufferSize {
			// Its read buffer is full: only its leaving can change
			// anything before the grant (queuedClientSpoke). A
			// registration for input still armed from its request is
			// narrowed too (a pending input event is then not reported).
			client.Events = syscall.EPOLLRDHUP | syscall.EPOLLONESHOT
			armed = false
		}
	}
	if state == loopServer || state == loopGroup {
		sc = ss.server // (the loop's own, read without mu: see request)
		if srvFD = sc.FD(); srvFD < 0 {
			return false
		}
		if sc.EventSet != int32(p.epfd)+1 {
			srvOp = syscall.EPOLL_CTL_ADD // (then kept: see dropServer)
		}
		server.Events = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT
	}
	p.mu.Lock()
	if p.closed || p.failed {
		p.mu.Unlock()
		return false
	}
	key := p.keyLocked(ss)
	if srvFD >= 0 {
		epoll.SetKey(&server, key|serverKeyBit)
		err := syscall.EpollCtl(p.epfd, srvOp, srvFD, &server)
		switch {
		case err == syscall.EEXIST && srvOp == syscall.EPOLL_CTL_ADD:
			// Registered without EventSet saying so: take it over (an
			// ADD would fail the same way at every loan after).
			srvOp = syscall.EPOLL_CTL_MOD
			err = syscall.EpollCtl(p.epfd, srvOp, srvFD, &server)
		case err == syscall.ENOENT && srvOp == syscall.EPOLL_CTL_MOD:
			srvOp = syscall.EPOLL_CTL_ADD
			err = syscall.EpollCtl(p.epfd, srvOp, srvFD, &server)
		}
		if err != nil {
			p.mu.Unlock()
			return false
		}
		if srvOp == syscall.EPOLL_CTL_ADD {
			p.serverAdds.Add(1)
		}
		sc.EventSet = int32(p.epfd) + 1
	}
	if !armed {
		if op == 0 {
			op = syscall.EPOLL_CTL_MOD
		}
		epoll.SetKey(&client, key)
		if err := syscall.EpollCtl(p.epfd, op, int(ss.fd), &client); err != nil {
			if op == syscall.EPOLL_CTL_ADD {
				p.releaseSlotLocked(ss) // (the socket is not in the set)
			}
			p.mu.Unlock()
			return false
		}
	}
	if client.Events&syscall.EPOLLIN != 0 {
		ss.loop |= loopArmed
	}
	p.inLoop++
	p.holdLocked(ss)
	p.mu.Unlock()
	p.lookAgain(ss)
	return true
}

// setLoop moves the session to another loop state; the client socket's
// registration stays as it was.
func (ss *session) setLoop(state uint8) { ss.loop = state | ss.loop&loopArmed }

// settleLooped parks the sessions the relay loop serves that have sent
// nothing for a whole sweep interval, as the sweep parks goroutines' idle
// sessions: they let go of their Reader, Writer and expectation ring, and
// wait as parked sessions do (the loop adopts them again at their next
// request, or a goroutine resumes them for a wake). It runs on the loop, at a
// sweep, and reports how many it parked. Each is taken out of the set
// while it changes, and put back with its registration renewed, which
// reports input that came meanwhile.
func (p *parker) settleLooped(now uint32) int {
	cfg := p.srv.cfg.Load()
	waitTimeout, loginTimeout, clock := cfg.QueryWaitTimeout.Std(), cfg.ClientLoginTimeout.Std(), monoNow()
	p.mu.Lock()
	p.eachHeldLocked(func(ss *session) {
		switch {
		case ss.loop == 0:
		case loginTimeout > 0 && p.expireLoginLocked(ss, loginTimeout, clock):
		case waitTimeout > 0 && p.expireQueuedLocked(ss, waitTimeout, clock):
		case ss.loop == loopClient|loopArmed && now-ss.activeTick.Load() >= 2:
			p.unholdLocked(ss)
			p.settling = append(p.settling, ss)
		}
	})
	p.mu.Unlock()
	parked := 0
	for _, ss := range p.settling {
		if p.settle(ss) {
			parked++
		}
	}
	clear(p.settling)
	p.settling = p.settling[:0]
	p.endExpired()
	return parked
}

// settle parks a session of the loop that settleLooped took out of the set,
// or has it wait as before if it is not idle after all, and reports
// whether it parked it. A panic ends the session (recoverTurn), not the
// process, and the sweep goes on with the others; so the session stays
// the loop's (ss.loop) until nothing that may panic is left, then is a
// parked session as any other (rearmParked).
func (p *parker) settle(ss *session) (parked bool) {
	defer p.recoverTurn(ss)
	ss.flags.And(^stParked)
	ss.loop &^= loopArmed // renew the registration either way
	ss.mu.Lock()
	idle := ss.server == nil && ss.dead == nil
	ss.mu.Unlock()
	if !idle || ss.rd.Buffered() != 0 || ss.wr.Len() != 0 || ss.tlsPending() {
		if !p.await(ss, loopClient, 0) {
			p.evict(ss, "cannot wait", false)
		}
		return false
	}
	ss.faultAt("settling")
	ss.q = ring{}
	ss.wr.Release()
	ss.rd.DetachSmall()
	if c, ok := ss.conn.(*tls13.Conn); ok {
		c.Park() // as detach parks it (adopt resumes it)
	}
	ss.rd, ss.wr = nil, nil
	ss.loop = 0
	if p.rearmParked(ss) {
		p.settles.Add(1)
		return true
	}
	p.resume(ss) // a goroutine carries on (and may park itself)
	return false
}

// rearmParked puts a session back in the set as a parked one, renewing its
// client socket's one-shot registration, and reports whether it could.
func (p *parker) rearmParked(ss *session) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	p.mu.Lock()
	if !p.closed && !p.failed {
		epoll.SetKey(&ev, p.keyLocked(ss))
	}
	if p.closed || p.failed || syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(ss.fd), &ev) != nil {
		p.mu.Unlock()
		return false
	}
	p.holdLocked(ss)
	p.mu.Unlock()
	p.lookAgain(ss)
	return true
}

// dropServer takes a server's socket out of the loop's epoll set, where
// it stays registered from one loan to the next (see await): for a server
// the loop hands on to a goroutine while its registration may be armed.
// A loan that ends on the loop keeps it, fired (and so disarmed): the
// socket's next borrower on the loop re-arms it with one
// EPOLL_CTL_MOD, its events carrying that session's key, and closing the
// socket ends the registration. A registration armed by mistake would
// only cost a spurious event: the slot's generation sends it nowhere, turn
// holds a queued session again, and any other session's next read finds
// nothing.
func (p *parker) dropServer(sc *pool.ServerConn) {
	if sc == nil || sc.EventSet == 0 {
		return // (and p.epfd is not read before the parker has started)
	}
	if sc.EventSet == int32(p.epfd)+1 {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, sc.FD(), nil)
		sc.EventSet = 0
	}
}
