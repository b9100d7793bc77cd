package router_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A Flush asks for everything the client is owed, whoever answers it: a
// Sync with nothing outstanding, which pgferry answers itself without a
// server, followed by a Flush in the same write gets its ReadyForQuery at
// once, as from PostgreSQL. Before, the Flush, finding no server to pass
// to, was dropped, and the ReadyForQuery stayed in pgferry's buffer until
// the client's next message (with the relay loop off): a client that waits
// for it hung.
func TestAFlushBehindAMessagePgferryAnswersItselfDeliversTheAnswer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
		t.Parallel()
		ctx := testContext(t)
		f := ferrytest.Start(t, cfg)
		pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
		c := hijack(t, pc)
		sendRaw(t, c, append(encode(t, &pgproto3.Sync{}), encode(t, &pgproto3.Flush{})...))
		frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
		if err != nil || len(frames) != 1 || frames[0].typ != 'Z' || string(frames[0].body) != "I" {
			t.Fatalf("got %s (%v); want ReadyForQuery I", describe(frames), err)
		}
		assertServes(t, ctx, f)
	})
}
