package lag

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// The probe queries. Column order matters to parsePrimary and parseReplica.
const (
	// pg_current_wal_lsn() raises "recovery is in progress" on a standby
	// (PostgreSQL docs, "Backup Control Functions"), so it only runs when the
	// server is not in recovery; it is volatile, so the CASE is evaluated at
	// run time, not folded.
	primaryQuery = "select pg_is_in_recovery(), case when pg_is_in_recovery() then null else pg_current_wal_lsn() end"
	replicaQuery = "select pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(), " +
		"extract(epoch from now() - pg_last_xact_replay_timestamp())"
)

// errMalformed marks a reply the probe cannot parse.
var errMalformed = errors.New("malformed probe reply")

// field is one text-format column value of a DataRow.
type field struct {
	text string
	null bool
}

// prober owns one probe connection to one server. It is used only by the
// holder of Monitor.round (one round at a time), so it needs no lock.
type prober struct {
	name string          // replica name or primary host, for errors
	cfg  pool.DialConfig // a private copy; RequireWritable off
	sc   *pool.ServerConn
}

func newProber(name string, cfg pool.DialConfig) *prober {
	cfg.RequireWritable = false // the probe must reach standbys to see them
	cfg.Hosts = append([]string(nil), cfg.Hosts...)
	// A copy, so the caller's slice is never appended to.
	params := make([]protocol.Param, 0, len(cfg.Params)+1)
	hasName := false
	for _, p := range cfg.Params {
		hasName = hasName || p.Key == "application_name"
		params = append(params, p)
	}
	if !hasName {
		params = append(params, protocol.Param{Key: "application_name", Value: "pgferry lag probe"})
	}
	cfg.Params = params
	return &prober{name: name, cfg: cfg}
}

// query runs sql and returns the single row it must produce, with ncols
// columns. Dial, login and query share one deadline, timeout from now (or
// ctx's, if earlier); ctx cancellation cuts the socket I/O short. Any failure
// closes the connection.
func (p *prober) query(ctx context.Context, timeout time.Duration, sql string, ncols int) ([]field, error) {
	reused := p.sc != nil
	if reused && !protocol.Alive(p.sc.Conn) {
		// The server went away between rounds (restart, idle kill).
		p.close()
		reused = false
	}
	row, err := p.try(ctx, timeout, sql, ncols)
	var srvErr *pool.ServerError
	if err != nil && reused && ctx.Err() == nil && !isTimeout(err) && !errors.As(err, &srvErr) {
		// A kept connection that died unnoticed (TLS hides the socket from
		// Alive) gets one fresh connection before the probe counts as failed.
		row, err = p.try(ctx, timeout, sql, ncols)
	}
	return row, err
}

func (p *prober) try(ctx context.Context, timeout time.Duration, sql string, ncols int) ([]field, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if p.sc == nil {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		sc, err := pool.Dial(dctx, &p.cfg)
		cancel()
		if err != nil {
			return nil, err // pool's errors name the address
		}
		p.sc = sc
	}
	sc := p.sc
	if err := sc.Conn.SetDeadline(deadline); err != nil {
		p.close()
		return nil, fmt.Errorf("probe %s: %w", sc.Addr, err)
	}
	// Blocked reads ignore contexts; make cancellation a deadline.
	stop := context.AfterFunc(ctx, func() { sc.Conn.SetDeadline(time.Unix(1, 0)) })
	row, err := p.roundTrip(sql, ncols)
	stop()
	if err != nil {
		p.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("probe %s: %w", sc.Addr, ctx.Err())
		}
		return nil, fmt.Errorf("probe %s: %w", sc.Addr, err)
	}
	return row, nil
}

// roundTrip runs one simple Query and returns its single row.
func (p *prober) roundTrip(sql string, ncols int) ([]field, error) {
	sc := p.sc
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	var (
		row  []field
		rows int
	)
	_, err := protocol.Exec(sc.Rd, sc.Wr, sql, func(typ byte, frame []byte) error {
		if typ != protocol.MsgDataRow {
			return nil
		}
		rows++
		if rows > 1 {
			return nil
		}
		var err error
		row, err = parseDataRow(protocol.Body(frame))
		return err
	})
	var srvErr *pool.ServerError
	switch {
	case errors.As(err, &srvErr):
		return nil, err
	case errors.Is(err, protocol.ErrUnexpectedMessage):
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	case err != nil:
		return nil, fmt.Errorf("read reply: %w", err)
	case rows != 1 || len(row) != ncols:
		return nil, fmt.Errorf("%w: %d rows of %d columns, want 1 row of %d", errMalformed, rows, len(row), ncols)
	}
	return row, nil
}

// close says goodbye (best effort) and closes the connection.
func (p *prober) close() {
	sc := p.sc
	if sc == nil {
		return
	}
	p.sc = nil
	sc.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	sc.Conn.Write(protocol.AppendTerminate(nil))
	sc.Conn.Close()
	sc.Rd.Release()
	if sc.Wr != nil {
		sc.Wr.Release()
	}
}

// parseDataRow decodes a DataRow body into fields; the strings are
// copies, since the frame is reused.
func parseDataRow(body []byte) ([]field, error) {
	var buf [8]protocol.Column
	cols, err := protocol.ParseDataRow(body, buf[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	row := make([]field, len(cols))
	for i, c := range cols {
		row[i] = field{text: string(c.Value), null: c.Null}
	}
	return row, nil
}

// primaryRow is the parsed reply to primaryQuery.
type primaryRow struct {
	inRecovery bool
	lsn        uint64 // valid when !inRecovery
}

func parsePrimary(row []field) (primaryRow, error) {
	var r primaryRow
	var err error
	if r.inRecovery, err = parseBool(row[0]); err != nil {
		return r, err
	}
	if r.inRecovery {
		return r, nil
	}
	if row[1].null {
		// Promoted between the two calls in the query: not writable yet.
		r.inRecovery = true
		return r, nil
	}
	if r.lsn, err = ParseLSN(row[1].text); err != nil {
		return r, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return r, nil
}

func parseReplica(row []field) (sample, error) {
	var s sample
	var err error
	if s.inRecovery, err = parseBool(row[0]); err != nil {
		return s, err
	}
	if !row[1].null {
		if s.replayLSN, err = ParseLSN(row[1].text); err != nil {
			return s, fmt.Errorf("%w: %w", errMalformed, err)
		}
		s.replayKnown = true
	}
	if !row[2].null {
		if s.receiveLSN, err = ParseLSN(row[2].text); err != nil {
			return s, fmt.Errorf("%w: %w", errMalformed, err)
		}
		s.receiveKnown = true
	}
	if !row[3].null {
		// extract() returns numeric, e.g. "0.123456".
		if s.replayAge, err = strconv.ParseFloat(row[3].text, 64); err != nil {
			return s, fmt.Errorf("%w: replay age %q", errMalformed, row[3].text)
		}
		s.ageKnown = true
	}
	return s, nil
}

func parseBool(f field) (bool, error) {
	switch {
	case f.null:
		return false, fmt.Errorf("%w: NULL boolean", errMalformed)
	case f.text == "t":
		return true, nil
	case f.text == "f":
		return false, nil
	}
	return false, fmt.Errorf("%w: boolean %q", errMalformed, f.text)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
