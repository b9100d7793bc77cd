package router_test

import (
	"net"
	"sync"
	"testing"
)

// tcpProxy forwards TCP connections to a server and can misbehave on
// demand, like the network between pgferry and PostgreSQL:
//
//   - stall(true) freezes it: connections are accepted, but nothing is
//     forwarded in either direction and nothing is closed, like a network
//     that silently drops packets; stall(false) lets everything flow again.
//   - hold makes new connections wait at a gate (each announced on pending)
//     until open; connections already through keep flowing. It lets a test
//     delay, say, the connection pgferry opens to deliver a CancelRequest
//     without slowing the pool's server connection.
type tcpProxy struct {
	ln      net.Listener
	target  string
	pending chan struct{}
	wg      sync.WaitGroup // the accept loop and every connection goroutine

	// mu guards the fields below; cond (on mu) is broadcast when stalled
	// or closed changes.
	mu      sync.Mutex
	cond    *sync.Cond
	stalled bool
	closed  bool
	gate    chan struct{} // nil: open; otherwise closed by open
	conns   []net.Conn
}

// startProxy starts a proxy to target on a free loopback port, closed when
// the test ends.
func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, pending: make(chan struct{}, 16)}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *tcpProxy) stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = on
	p.cond.Broadcast()
}

func (p *tcpProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

func (p *tcpProxy) open() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// close stops the proxy, opens the gate, closes every connection and waits
// for the proxy's goroutines.
func (p *tcpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}

// track registers c to be closed by close; it reports false (and closes c)
// if the proxy is already closed.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// flowing blocks while the proxy is stalled; it reports false once closed.
func (p *tcpProxy) flowing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *tcpProxy) serve(c net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case p.pending <- struct{}{}:
		default:
		}
		// close opens the gate too; flowing then reports false.
		<-gate
	}
	if !p.flowing() {
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(s) {
		c.Close()
		return
	}
	p.wg.Add(2)
	go p.copy(s, c)
	go p.copy(c, s)
}

// copy forwards src to dst until either fails, holding every chunk while
// the proxy is stalled, then closes both.
func (p *tcpProxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.flowing() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
