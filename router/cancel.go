package router

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
)

// forwardCancel relays a client's CancelRequest to the server connection
// serving that client right now, with the server's own key. A key that
// matches no session, or a session without a server, is dropped, as
// PostgreSQL drops unknown keys.
func (s *Server) forwardCancel(pid, key uint32) {
	ss := s.sessionByKey(pid, key)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	sc := ss.server
	var host, addr string
	var spid, skey uint32
	if sc != nil {
		host, addr, spid, skey = sc.Host, sc.Addr, sc.PID, sc.Key
	}
	ss.mu.Unlock()
	if sc == nil {
		return
	}
	timeout := s.cfg.Load().CancelWaitTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dc := sc.Pool().Config().Dial
	if err := pool.SendCancel(ctx, &dc, host, addr, spid, skey); err != nil {
		s.log.Warn("cancel request failed", zap.Uint64("conn_id", ss.id), zap.Error(err))
	}
}
