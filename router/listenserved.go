// A channel a pinned client hears both ways, from its own server and from
// pgferry's listener: the set of channels the listener serves the client,
// and the server's copies dropped while it does.

package router

import (
	"slices"

	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/notify"
)

// A client pinned to its server may also listen on it directly: a LISTEN
// among other statements of one Query, or of a channel pgferry cannot
// read, runs on the server (and pins). A channel it listens on both ways
// (in either order, whatever its spelling) would reach it twice, once from
// its server and once from pgferry's listener, where PostgreSQL delivers
// each notification once. pgferry's listener is the channel's home then:
// the notifications the server sends on a channel pgferry's listener
// serves the client are dropped (heardAside), but only while the
// listener's copy is sure to come. So the session keeps its own set of
// the channels the listener serves it (listenBook.served), switched on as
// a LISTEN's answer is handed to the client (the listener acknowledged its
// LISTEN before that: subscribe) and off as an UNLISTEN's query ends, and
// asks the listener only whether it is up (notify.Listener.Live: not while it
// reconnects), without its lock. Until the switch a notification comes
// from the server alone; the listener's copy of one committed after its
// acknowledgement and sent by the server before it ran the LISTEN's empty
// query would come too (a window of one round trip to the server). What
// the server listens on is not known (a LISTEN among other statements is
// not named by classify, and takes effect only when its transaction
// commits); the server's copies on other channels are relayed.

// servedChannel is a channel pgferry's listener serves the client, and
// that listener.
type servedChannel struct {
	channel string
	l       *notify.Listener
	// since is the number of the request whose LISTEN's answer switched
	// it on (0 with none linked): an UNLISTEN sent before that LISTEN and
	// settled after its answer leaves it on (unlistenRan).
	since uint64
}

// forwardNotification relays a NotificationResponse of size bytes, the
// server's next frame, for relayServer in transaction mode, with
// protocol.Reader.ForwardRun's errors; it drops it if pgferry's listener
// delivers its channel to the client (heardAside). mu is not held.
func (ss *session) forwardNotification(rd *protocol.Reader, wr *protocol.Writer, size int) error {
	if size > protocol.BufferSize {
		// Not a notification PostgreSQL sends (its payload is shorter
		// than 8000 bytes, its channel a name): streamed as it is.
		return rd.ForwardRun(wr, protocol.MsgNotification, size)
	}
	frame, err := rd.NextPeeked(size)
	if err != nil {
		return err
	}
	if !ss.heardAside(frame) {
		wr.Append(frame)
	}
	return nil
}

// heardAside reports whether frame, a NotificationResponse the client's
// own server sent, is on a channel pgferry's listener serves the client
// (listenBook.served) while that listener is up. Its caller relays the
// server's answers, so it is the client's writer, which owns the set. mu
// is not held; no listener lock is taken.
func (ss *session) heardAside(frame []byte) bool {
	ss.mu.Lock()
	r := ss.rare // (made by the session's goroutine, maybe as this relays)
	ss.mu.Unlock()
	if r == nil || len(r.listen.served) == 0 {
		return false
	}
	ch, ok := notificationChannel(frame)
	if !ok {
		return false
	}
	for _, sc := range r.listen.served {
		if sc.channel == string(ch) {
			return sc.l.Live()
		}
	}
	return false
}

// serveChannel switches channel on in the set of channels l serves the
// client (listenBook.served), as the answer to its LISTEN, request number
// since, is handed to the client. The client's writer calls it: the relay
// (mu held), or the session's goroutine with no server linked (mu not
// held).
func (ss *session) serveChannel(channel string, l *notify.Listener, since uint64) {
	if l == nil {
		return
	}
	b := &ss.rare.listen
	for i := range b.served {
		if b.served[i].channel == channel {
			b.served[i].l, b.served[i].since = l, since
			return
		}
	}
	b.served = append(b.served, servedChannel{channel: channel, l: l, since: since})
}

// unserveChannel switches channel (every channel with all) off in the
// client's served set, as its UNLISTEN's transaction commits (unlistenRan) or,
// with no server linked, as its answer is handed to the client; it reports
// whether channel was on. The client's writer calls it.
func (ss *session) unserveChannel(channel string, all bool) bool {
	if ss.rare == nil {
		return false
	}
	b := &ss.rare.listen
	if all {
		clear(b.served)
		b.served = b.served[:0]
		return true
	}
	for i := range b.served {
		if b.served[i].channel == channel {
			b.served = slices.Delete(b.served, i, i+1)
			return true
		}
	}
	return false
}

// notificationChannel returns the channel a NotificationResponse frame
// names (message type 'A': process ID, channel, payload). It is valid as
// long as frame.
func notificationChannel(frame []byte) ([]byte, bool) {
	body := protocol.Body(frame)
	if len(body) < 5 {
		return nil, false
	}
	ch, _, ok := protocol.CString(body[4:])
	return ch, ok
}
