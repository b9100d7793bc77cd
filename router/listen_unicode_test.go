package router_test

// LISTEN and UNLISTEN of a channel named with Unicode escapes (U&"..."):
// pgferry reads the name as PostgreSQL does and serves them through its
// listener exactly as for the same channel written plainly, in the simple
// protocol and by Parse/Bind/Execute.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// channelSpellings are channels named with Unicode escapes and the
// channel PostgreSQL reads each as.
var channelSpellings = []struct {
	name, sql, channel string
}{
	{"four-digit escapes", `U&"\0061bc"`, "abc"},
	{"an escape character of its own", `U&"d!0061t" UESCAPE '!'`, "dat"},
	{"a six-digit escape", `U&"\+000061bc"`, "abc"},
	{"a surrogate pair, not folded to lower case", `U&"X\D83D\DE00"`, "X\U0001F600"},
}

// statementRunners run a statement without arguments in each of the ways a
// client may: the simple protocol, the unnamed statement of the extended
// protocol, and a named prepared statement.
var statementRunners = []struct {
	name string
	run  func(ctx context.Context, c *pgx.Conn, sql string) error
}{
	{"simple protocol", func(ctx context.Context, c *pgx.Conn, sql string) error {
		_, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		return err
	}},
	{"unnamed statement", func(ctx context.Context, c *pgx.Conn, sql string) error {
		return c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
	}},
	{"named prepared statement", func(ctx context.Context, c *pgx.Conn, sql string) error {
		const name = "listen_unicode_stmt"
		if _, err := c.PgConn().Prepare(ctx, name, sql, nil); err != nil {
			return err
		}
		if err := c.PgConn().ExecPrepared(ctx, name, nil, nil, nil).Read().Err; err != nil {
			return err
		}
		return c.PgConn().Deallocate(ctx, name)
	}},
}

// nextNotification waits for the client's next notification.
func nextNotification(t *testing.T, ctx context.Context, c *pgx.Conn) (channel, payload string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := c.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("waiting for a notification: %v", err)
	}
	return n.Channel, n.Payload
}

// quoteName is channel as a quoted identifier: the plain spelling.
func quoteName(channel string) string {
	return `"` + strings.ReplaceAll(channel, `"`, `""`) + `"`
}

// listenCase runs one LISTEN/UNLISTEN case: the client LISTENs with
// listen, gets a notification on channel, UNLISTENs with unlisten and
// gets none on it from then on.
func listenCase(t *testing.T, ctx context.Context, f *ferrytest.Ferry, run func(context.Context, *pgx.Conn, string) error, listen, unlisten, channel string) {
	t.Helper()
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	sender := ferrytest.Connect(t, ctx, f.AppDSN())
	notify := func(channel, payload string) {
		t.Helper()
		if _, err := sender.Exec(ctx, "select pg_notify($1, $2)", channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(ctx, c, "LISTEN "+listen); err != nil {
		t.Fatalf("LISTEN %s: %v", listen, err)
	}
	// Served like any LISTEN: through pgferry's listener, with the client
	// free to move between server connections.
	if n := f.Server.Snapshot().PinnedTotal; n != 0 {
		t.Errorf("LISTEN %s pinned the client (%d pinned); want it served like LISTEN of %q", listen, n, channel)
	}
	notify(channel, "before")
	if ch, p := nextNotification(t, ctx, c); ch != channel || p != "before" {
		t.Fatalf("got %q on %q, want \"before\" on %q", p, ch, channel)
	}

	if err := run(ctx, c, "UNLISTEN "+unlisten); err != nil {
		t.Fatalf("UNLISTEN %s: %v", unlisten, err)
	}
	if _, err := c.Exec(ctx, "LISTEN sentinel"); err != nil {
		t.Fatal(err)
	}
	// Notifications from one session arrive in order: the sentinel's comes
	// after any on the channel left.
	notify(channel, "after")
	notify("sentinel", "last")
	if ch, p := nextNotification(t, ctx, c); ch != "sentinel" {
		t.Fatalf("after UNLISTEN %s the client got %q on %q", unlisten, p, ch)
	}
}

func TestUnlistenOfAUnicodeEscapedChannelStopsItsNotifications(t *testing.T) {
	t.Parallel()
	for _, r := range statementRunners {
		for _, sp := range channelSpellings {
			t.Run(r.name+", "+sp.name, func(t *testing.T) {
				t.Parallel()
				ctx := testContext(t)
				cfg, _ := configWithOwnDatabase(t) // the channels of the other subtests are the same
				f := ferrytest.Start(t, cfg)
				listenCase(t, ctx, f, r.run, quoteName(sp.channel), sp.sql, sp.channel)
			})
		}
	}
}

func TestListenOfAUnicodeEscapedChannelIsServedLikeAnyListen(t *testing.T) {
	t.Parallel()
	for _, r := range statementRunners {
		for _, sp := range channelSpellings {
			t.Run(r.name+", "+sp.name, func(t *testing.T) {
				t.Parallel()
				ctx := testContext(t)
				cfg, _ := configWithOwnDatabase(t) // the channels of the other subtests are the same
				f := ferrytest.Start(t, cfg)
				listenCase(t, ctx, f, r.run, sp.sql, quoteName(sp.channel), sp.channel)
			})
		}
	}
}

// A channel name PostgreSQL refuses is the server's to refuse: LISTEN and
// UNLISTEN of it get its error, and the client's other LISTENs stay.
func TestAChannelNameWithAnInvalidUnicodeEscapeGetsTheServersErrorAndDropsNoListen(t *testing.T) {
	t.Parallel()
	for _, r := range statementRunners {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t) // the channels of the other subtests are the same
			f := ferrytest.Start(t, cfg)
			c := ferrytest.Connect(t, ctx, f.AppDSN())
			sender := ferrytest.Connect(t, ctx, f.AppDSN())
			if _, err := c.Exec(ctx, "LISTEN kept"); err != nil {
				t.Fatal(err)
			}
			for _, sql := range []string{`UNLISTEN U&"\zzzz"`, `UNLISTEN U&"\D83D"`, `UNLISTEN U&"kep!0074" UESCAPE '+'`} {
				expectPgError(t, r.run(ctx, c, sql), "42601")
			}
			if _, err := sender.Exec(ctx, "NOTIFY kept, 'still'"); err != nil {
				t.Fatal(err)
			}
			if ch, p := nextNotification(t, ctx, c); ch != "kept" || p != "still" {
				t.Fatalf("got %q on %q, want \"still\" on kept", p, ch)
			}
			// (A LISTEN pgferry cannot read pins its client, whose server
			// runs it: another client's, since notifications from pgferry's
			// listener do not reach a client pinned after it listened.)
			other := ferrytest.Connect(t, ctx, f.AppDSN())
			expectPgError(t, r.run(ctx, other, `LISTEN U&"\zzzz"`), "42601")
		})
	}
}

// PostgreSQL cuts a channel name to NAMEDATALEN-1 bytes, and reports its
// notifications under that name.
func TestAListenOfALongChannelNameGetsItsNotifications(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 60) + "bcdefgh"
	for _, r := range statementRunners {
		for _, sql := range []string{long, quoteName(long), `U&"` + strings.Repeat(`\0061`, 60) + `bcdefgh"`} {
			t.Run(r.name+", "+sql[:3], func(t *testing.T) {
				t.Parallel()
				ctx := testContext(t)
				cfg, _ := configWithOwnDatabase(t) // the channels of the other subtests are the same
				f := ferrytest.Start(t, cfg)
				listenCase(t, ctx, f, r.run, sql, sql, long[:63])
			})
		}
	}
}
