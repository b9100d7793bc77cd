package fleet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// report is what an instance tells its peers.
type report struct {
	ID int `json:"id"`
	// Nonce is random per process: what tells instances apart.
	Nonce uint64 `json:"nonce"`
	// Ready is false until the first exchange with every listed peer.
	Ready bool `json:"ready"`
	// Leaving: shutting down, opening nothing more.
	Leaving bool `json:"leaving,omitempty"`
	// View lists this instance and the peers it heard from lately, by
	// nonce.
	View    []uint64       `json:"view"`
	Budgets map[string]use `json:"budgets,omitempty"`
}

// use is one budget as its holder reports it.
type use struct {
	Cap  int `json:"cap"`
	Used int `json:"used"`
}

// held is what a peer may hold of a budget: its cap, or more while it is
// closing connections down to a lowered cap.
func (u use) held() int { return max(u.Cap, u.Used) }

func (r *report) lists(id uint64) bool {
	for _, v := range r.View {
		if v == id {
			return true
		}
	}
	return false
}

// maxReport bounds one report on the wire (about 20,000 budgets), and
// maxView the instances it lists.
const (
	maxReport = 1 << 20
	maxView   = 4096
)

// encodeReport frames r: a 4-byte big-endian length that counts itself,
// then JSON.
func encodeReport(r *report) []byte {
	body, _ := json.Marshal(r) // plain structs: cannot fail
	msg := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(4+len(body)))
	return append(msg, body...)
}

// readReport reads one framed report.
func readReport(r *bufio.Reader) (*report, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint32(n[:]))
	if size < 4 || size > maxReport {
		return nil, fmt.Errorf("peer link: report of %d bytes", size)
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	rep := new(report)
	if err := json.Unmarshal(body, rep); err != nil {
		return nil, fmt.Errorf("peer link: bad report: %w", err)
	}
	if rep.ID < 1 || rep.Nonce == 0 {
		return nil, errors.New("peer link: report without a peer id or nonce")
	}
	if len(rep.View) > maxView {
		return nil, fmt.Errorf("peer link: a view of %d instances", len(rep.View))
	}
	for key, u := range rep.Budgets {
		if u.Cap < 0 || u.Used < 0 {
			return nil, fmt.Errorf("peer link: negative connections for %q", key)
		}
	}
	return rep, nil
}

// A link is one TCP connection to a peer, either dialed (addr set) or
// accepted. Its reader posts the peer's reports; its writer sends ours.
// The owner goroutine owns the struct's fields; the goroutines use only
// conn, out, quit and in.
type link struct {
	conn net.Conn
	addr string
	in   *bufio.Reader
	// out holds the next report to send; a newer one replaces it.
	out  chan []byte
	quit chan struct{}
	// Owner's fields.
	peer   int    // the peer id it reported, 0 before its first report
	nonce  uint64 // the nonce of its first report: a link is one instance
	closed bool
}

func newLink(conn net.Conn, addr string, buffered []byte) *link {
	var src io.Reader = conn
	if len(buffered) > 0 {
		src = io.MultiReader(bytes.NewReader(buffered), conn)
	}
	return &link{conn: conn, addr: addr, in: bufio.NewReader(src), out: make(chan []byte, 1), quit: make(chan struct{})}
}

// send queues msg, replacing a report not yet written. Owner only.
func (l *link) send(msg []byte) {
	for {
		select {
		case l.out <- msg:
			return
		default:
		}
		select {
		case <-l.out:
		default:
		}
	}
}

// close makes the writer send what is queued and close the connection.
// Owner only.
func (l *link) close() {
	if !l.closed {
		l.closed = true
		close(l.quit)
	}
}

func (f *Fleet) read(l *link) {
	defer f.wg.Done()
	for {
		// A peer sends at least one report per interval.
		l.conn.SetReadDeadline(time.Now().Add(3 * f.cfg.Interval))
		rep, err := readReport(l.in)
		if err != nil {
			f.post(func(st *state) { st.down(l, err) })
			return
		}
		if !f.post(func(st *state) { st.heard(l, rep) }) {
			return
		}
	}
}

func (f *Fleet) write(l *link) {
	defer f.wg.Done()
	defer l.conn.Close()
	for {
		select {
		case msg := <-l.out:
			l.conn.SetWriteDeadline(time.Now().Add(f.cfg.Interval))
			if _, err := l.conn.Write(msg); err != nil {
				return
			}
		case <-l.quit:
			select {
			case msg := <-l.out:
				l.conn.SetWriteDeadline(time.Now().Add(f.cfg.Interval))
				l.conn.Write(msg)
			default:
			}
			return
		}
	}
}
