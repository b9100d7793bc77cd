package router_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client killed (KILL_CLIENT) while pgferry's write of a row to it is
// cut short (the client reads nothing, its socket is full in the middle
// of a 20 MB row) gets no FATAL after the cut: its stream ends there. A
// FATAL written there would be read as the rest of the row, the row's
// bytes and the FATAL's mixed into data; pgferry's own lost-server
// message is withheld in that state for that reason (survivable).
func TestAKilledClientWhoseRowWasCutMidWayGetsNothingAfterTheCut(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	const rowSize = 20_000_000
	for _, mode := range []string{"session", "transaction"} {
		for _, loop := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s mode, relay loop %v", mode, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				ctx := testContext(t)
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				cfg.PoolMode = mode
				e := cfg.Databases["app"]
				e.PoolMode = mode
				cfg.Databases["app"] = e
				f := ferrytest.Start(t, cfg)
				const app = "pgferry-killed-mid-row"
				admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
				pc := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
				if loop && mode == "transaction" {
					allIntoTheLoop(t, ctx, f, pc)
				}
				// (A login the relay loop serves is listed once its
				// session is, which may be just after the client's
				// ReadyForQuery.)
				var ptr string
				ferrytest.Eventually(t, 10*time.Second, "the client listed by SHOW CLIENTS", func() (bool, error) {
					ptr = mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)["ptr"]
					return ptr != "", nil
				})
				hc, err := pc.Hijack()
				if err != nil {
					t.Fatal(err)
				}
				conn := hc.Conn
				defer conn.Close()
				sql := fmt.Sprintf("select repeat('x', %d)", rowSize)
				q := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(sql)+1))
				if _, err := conn.Write(append(append(q, sql...), 0)); err != nil {
					t.Fatal(err)
				}
				// The client reads the RowDescription and the start of the
				// row, then nothing: pgferry's write of the row to it is
				// stuck (the backend waits to write too).
				conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
				got := make([]byte, 5)
				if _, err := io.ReadFull(conn, got); err != nil || got[0] != 'T' {
					t.Fatalf("the client read %q, %v; want a RowDescription first", got, err)
				}
				const header = 1 + 4 + 2 + 4 // the DataRow's type, length, column count, column length
				got = append(got, make([]byte, int(binary.BigEndian.Uint32(got[1:5]))-4+header+1)...)
				if _, err := io.ReadFull(conn, got[5:]); err != nil {
					t.Fatalf("the client read %q, %v; want the start of the row", got, err)
				}
				waitForBackend(t, ctx, db, "wait_event = 'ClientWrite'")
				mustAdmin(t, admin, "KILL_CLIENT "+ptr)

				rest, err := io.ReadAll(conn)
				if err != nil {
					t.Fatalf("the killed client's connection did not end: %v (%d bytes read)", err, len(rest))
				}
				got = append(got, rest...)
				// The RowDescription, then the DataRow, cut: after its
				// header only x.
				row := got[1+binary.BigEndian.Uint32(got[1:5]):]
				if row[0] != 'D' {
					t.Fatalf("after the RowDescription the client read %q...; want a DataRow", row[:min(len(row), 16)])
				}
				data := row[header:]
				if len(data) >= rowSize {
					t.Fatalf("the client read the whole row (%d bytes); want it cut by the kill", len(data))
				}
				if i := bytes.IndexFunc(data, func(r rune) bool { return r != 'x' }); i >= 0 {
					t.Fatalf("the row, cut after %d bytes, goes on with %q: bytes that are not the row's were written into it", i, data[i:min(len(data), i+80)])
				}
			})
		}
	}
}
