// The Server's listeners: binding the TCP address and unix socket (Listen)
// and accepting clients on goroutines (Serve, acceptLoop); the relay loop
// accepts on its own (accept_linux.go).

package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/sockio"
)

// Listen binds the configured TCP address and unix socket.
func (s *Server) Listen() error {
	cfg := s.cfg.Load()
	lc := ListenConfig(cfg.SoReuseport)
	host := cfg.ListenAddr
	if host == "*" {
		host = ""
	}
	var ls []net.Listener
	for _, h := range strings.Split(host, ",") {
		l, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(strings.TrimSpace(h), strconv.Itoa(cfg.ListenPort)))
		if err != nil {
			closeAll(ls)
			return fmt.Errorf("listen on %s:%d: %w", h, cfg.ListenPort, err)
		}
		ls = append(ls, newRawListener(l, loopLoginsOn && loopBuilt && inlineRelay && sockio.Available && loopConfig(cfg)))
	}
	if cfg.UnixSocketDir != "" {
		port := cfg.ListenPort
		if port == 0 {
			port = ls[0].Addr().(*net.TCPAddr).Port
		}
		path := filepath.Join(cfg.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(port))
		os.Remove(path)
		// SO_REUSEPORT does not apply to unix sockets: a replacement
		// process takes the path over (the old one's socket file is
		// removed when it exits).
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "unix", path)
		if err != nil {
			closeAll(ls)
			return fmt.Errorf("listen on unix socket %s: %w", path, err)
		}
		os.Chmod(path, 0o777)
		ls = append(ls, l)
	}
	s.mu.Lock()
	s.listeners = ls
	s.mu.Unlock()
	return nil
}

// ListenConfig returns a net.ListenConfig for pgferry's TCP listeners.
// Client sockets get TCP keepalive with Go's defaults (15 s idle, 15 s
// between probes, 9 probes). On Linux these are set once on the listening
// socket, which accepted sockets inherit: Go would otherwise make four
// setsockopt calls per accepted connection, a cost a burst of short-lived
// clients pays in full. With reusePort it also sets SO_REUSEPORT, so a
// replacement pgferry can bind the same address while the old one drains.
func ListenConfig(reusePort bool) *net.ListenConfig {
	opts := listenerKeepalive
	lc := &net.ListenConfig{}
	if opts != nil {
		lc.KeepAlive = -1 // inherited from the listener instead
	}
	if reusePort {
		opts = append(opts[:len(opts):len(opts)], sockopt{syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1})
	}
	if len(opts) == 0 {
		return lc
	}
	lc.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			for _, o := range opts {
				if err := syscall.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil && serr == nil {
					serr = err
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}
	return lc
}

type sockopt struct{ level, opt, value int }

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// Addr returns the TCP address pgferry listens on (after Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) == 0 {
		return nil
	}
	return s.listeners[0].Addr()
}

// Serve accepts clients until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve() error {
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	if len(ls) == 0 {
		return errors.New("serve: Listen was not called")
	}
	if s.fleet != nil {
		s.fleet.Start()
	}
	for _, l := range ls {
		s.wg.Add(1)
		go s.acceptLoop(l)
	}
	s.log.Info("listening", zap.Stringer("addr", ls[0].Addr()))
	return nil
}

func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	rl, _ := l.(*rawListener)
	var delay time.Duration
	for {
		if rl != nil && rl.loopMode && s.parker.loopLogins() && s.parker.takeListener(rl) {
			// The relay loop accepts (acceptOn) until it gives accepting
			// back: the listener closed, the loop no longer takes
			// logins, or an error this goroutine backs off from.
			<-rl.back
			if rl.isClosed() {
				return
			}
		}
		var c net.Conn
		var err error
		if rl != nil && rl.loopMode && !rl.usable() {
			// Go's listener is closed: nothing else can wait for clients.
			if rl.isClosed() || s.isDraining() {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("cannot wait for clients; retrying", zap.Error(rl.waitErr()), zap.Duration("retry_in", delay))
			time.Sleep(delay)
			continue
		}
		if rl != nil && (rl.loopMode || s.parker.loopLogins()) && rl.usable() {
			var fd int
			var peer net.Addr
			if fd, peer, err = rl.acceptFD(); err == nil {
				delay = 0
				s.wg.Add(1)
				if s.parker.loopLogins() {
					s.takeFD(fd, peer) // a login on the relay loop
				} else {
					s.serveFD(fd) // (the loop was turned off by a reload)
				}
				continue
			}
		} else {
			c, err = l.Accept()
		}
		if err != nil {
			if s.isDraining() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.serveClient(sockio.Wrap(c))
	}
}
