package router_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A FunctionCall message calls a function by its OID, outside SQL: a
// session advisory lock taken that way outlives the transaction as one
// taken in a SELECT does, and pins the client in transaction mode.
func TestAnAdvisoryLockTakenByFunctionCallPinsTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	c := hijack(t, pc)
	before := f.Server.Snapshot().PinnedTotal
	key := binary.BigEndian.AppendUint64(nil, 4711)
	sendRaw(t, c, encode(t, &pgproto3.FunctionCall{
		Function:         2880, // pg_advisory_lock(bigint)
		ArgFormatCodes:   []uint16{1},
		Arguments:        [][]byte{key},
		ResultFormatCode: 1,
	}))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
	if got := describe(frames); err != nil || got != "V Z" {
		t.Fatalf("the FunctionCall was answered %s (%v); want V Z", got, err)
	}
	if got := f.Server.Snapshot().PinnedTotal; got != before+1 {
		t.Fatalf("%d clients pinned after the FunctionCall; want %d", got, before+1)
	}
}
