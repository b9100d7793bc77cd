//go:build !linux || pgferry_nopark

package router

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// parker keeps idle sessions without a goroutine on Linux only (it needs
// epoll); elsewhere idle sessions keep their goroutine.
type parker struct {
	srv  *Server
	tick atomic.Uint32
	// (Counters of the relay loop's, which is not built here.)
	queueings, queuedReads, nudgeWakes, serverAdds, settles atomic.Uint64
	loopLoginsDone, loginHandoffs                           atomic.Uint64
	loopAccepts                                             atomic.Uint64
}

func (p *parker) start() bool        { return false }
func (p *parker) park(*session) bool { return false }
func (p *parker) unpark(*session)    {}
func (p *parker) close()             {}
func (p *parker) count() int         { return 0 }
func (p *parker) admitted(*session)  {}

// The relay loop needs the parker's epoll set: sessions keep their
// goroutine here.
func (p *parker) enter(ss *session) bool {
	ss.loopCredit = loopNever
	return false
}
func (p *parker) dropServer(*pool.ServerConn) {}

const loopBuilt = false

// clock is monoNow: no loop serves sessions here.
func (p *parker) clock(*session) mono { return monoNow() }

// wall is the zero Time without the relay loop: the pool reads its clock.
func (p *parker) wall(*session) time.Time { return time.Time{} }

func socketFD(net.Conn) int { return -1 }

// closeSocket closes the client socket at the end of the session.
func (ss *session) closeSocket() { ss.raw.Close() }

// reattach and fdLocalAddr are never needed: sessions do not park here.
func (ss *session) reattach() error { return nil }
func fdLocalAddr(int) net.Addr      { return nil }

// Logins run on goroutines: there is no relay loop.
func (p *parker) loopLogins() bool                       { return false }
func (p *parker) takeListener(*rawListener) bool         { return false }
func (s *Server) takeFD(int, net.Addr)                   {}
func (s *Server) serveFD(int)                            {}
func newRawListener(l net.Listener, _ bool) net.Listener { return l }

type rawListener struct {
	net.Listener
	loopMode bool
	back     chan struct{}
}

func (*rawListener) isClosed() bool                   { return true }
func (*rawListener) waitErr() error                   { return nil }
func (*rawListener) usable() bool                     { return false }
func (*rawListener) acceptFD() (int, net.Addr, error) { return -1, nil, net.ErrClosed }
