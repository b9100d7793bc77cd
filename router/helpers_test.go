package router_test

// Helpers shared by the router's end-to-end tests, which run real clients
// through an in-process pgferry to the PostgreSQL cluster of TestMain.
// Connecting (ferrytest.Connect, ConnectConfig, ConnectPgConn), waiting for
// a condition (ferrytest.Eventually) and reading a pool (Ferry.Pool) come
// from ferrytest; this file adds what only these tests need: a bounded
// context, configuration with a database of the test's own, probes of the
// server's pg_stat_activity, PostgreSQL error checks, a raw-protocol client
// for what pgx will not send, and certificates. The misbehaving TCP proxy is
// in proxy_test.go.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// testTimeout bounds every end-to-end test. The tests finish far sooner on
// a healthy build; the bound only turns a hang into a failure.
const testTimeout = 90 * time.Second

// testContext returns a context that ends after testTimeout or when the
// test ends.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// configWithOwnDatabase returns a ferrytest configuration whose "app" entry
// points at a database created for this test only (dropped when it ends),
// so a test sees no other test's tables, locks or sessions and can read
// pg_stat_activity for its own, even while tests run in parallel. It
// returns the server database's name too.
func configWithOwnDatabase(t *testing.T) (*configs.Config, string) {
	t.Helper()
	cfg := ferrytest.Config(t, cluster)
	name := cluster.CreateDatabase(t, pgtest.AppUser)
	db := cfg.Databases["app"]
	db.DBName = name
	cfg.Databases["app"] = db
	return cfg, name
}

// setPoolSize sets the pool size of database entry name. Loading copied
// default_pool_size into every entry, so the entry itself must change.
func setPoolSize(cfg *configs.Config, name string, size int) {
	db := cfg.Databases[name]
	db.PoolSize = size
	cfg.Databases[name] = db
}

// offerClientTLS makes pgferry accept TLS from clients with sslmode mode
// ("prefer", "require", "verify-full"), presenting the cluster's
// certificate, which is valid for localhost and 127.0.0.1.
func offerClientTLS(cfg *configs.Config, mode string) {
	cfg.ClientTLSSSLMode = mode
	cfg.ClientTLSCertFile, cfg.ClientTLSKeyFile = cluster.CertFile, cluster.KeyFile
}

// assertServes checks that a brand-new client can log in through f and run
// a query.
func assertServes(t *testing.T, ctx context.Context, f *ferrytest.Ferry) {
	t.Helper()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatalf("a new client cannot connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "select 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("a new client cannot run a query: %d, %v", n, err)
	}
}

// assertNoPanic fails the test if pgferry logged a recovered panic.
func assertNoPanic(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	if logs := f.Logs(); strings.Contains(logs, "panicked") {
		t.Fatalf("pgferry recovered a panic:\n%s", logs)
	}
}

// queryInt runs sql as the superuser directly on the cluster, bounded by a
// short timeout so that polling loops stay responsive.
func queryInt(ctx context.Context, sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cluster.QueryInt(ctx, sql, args...)
}

// busyBackends counts the server backends of user app in database db that
// are running something or sit inside a transaction. The probe itself runs
// as the superuser in database postgres, so it never counts itself.
func busyBackends(ctx context.Context, db string) (int64, error) {
	return queryInt(ctx, `select count(*) from pg_stat_activity
		where datname = $1 and usename = 'app'
		and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')`, db)
}

// waitNoBusyBackends waits until database db has no busy backend of user
// app left.
func waitNoBusyBackends(t *testing.T, ctx context.Context, db string) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, "no active or idle-in-transaction backend of user app in "+db, func() (bool, error) {
		n, err := busyBackends(ctx, db)
		return n == 0, err
	})
}

// waitForBackend waits until a backend of database db matches the SQL
// condition cond on pg_stat_activity.
func waitForBackend(t *testing.T, ctx context.Context, db, cond string) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, "a backend in "+db+" where "+cond, func() (bool, error) {
		n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and "+cond, db)
		return n > 0, err
	})
}

// pgCode returns the SQLSTATE and severity of a *pgconn.PgError in err; ok
// is false when err carries none.
func pgCode(err error) (code, severity string, ok bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Severity, true
	}
	return "", "", false
}

// expectPgError asserts that err carries a PostgreSQL error with SQLSTATE
// code and returns it.
func expectPgError(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("got error %v (%T), want a PostgreSQL error with SQLSTATE %s", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("got SQLSTATE %s (%s %q), want %s", pe.Code, pe.Severity, pe.Message, code)
	}
	return pe
}

// lastLines returns the last n lines of s, for quoting long program output.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Request codes of the startup-phase packets other than StartupMessage.
const (
	cancelRequestCode = 1234<<16 | 5678
	sslRequestCode    = 1234<<16 | 5679
	gssEncRequestCode = 1234<<16 | 5680
)

// startupPacket builds a startup-phase packet: int32 length, int32 code,
// then the given body. Unlike startupMessage it can build malformed ones.
func startupPacket(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

// startupMessage encodes a protocol 3.0 StartupMessage.
func startupMessage(t *testing.T, user, database string) []byte {
	t.Helper()
	return encode(t, &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": database},
	})
}

// encode encodes a frontend message.
func encode(t *testing.T, msg pgproto3.FrontendMessage) []byte {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialFerry opens a raw TCP connection to pgferry, closed when the test
// ends.
func dialFerry(t *testing.T, f *ferrytest.Ferry) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.Addr.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hijack takes over the socket of a logged-in pgconn connection (closed
// when the test ends), so the test can send frames without waiting for
// answers.
func hijack(t *testing.T, pc *pgconn.PgConn) net.Conn {
	t.Helper()
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	return hj.Conn
}

// sendRaw writes b to c, failing the test on error.
func sendRaw(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write to pgferry: %v", err)
	}
}

// frame is one backend message read off a raw connection.
type frame struct {
	typ  byte
	body []byte
}

// readFrames reads frames until the connection closes, until stop (if
// non-nil) returns true for a frame, or until timeout. closed reports an
// EOF or reset.
func readFrames(c net.Conn, timeout time.Duration, stop func(frame) bool) (frames []frame, closed bool, err error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var buf []byte
	chunk := make([]byte, 8192)
	for {
		for len(buf) >= 5 {
			n := int(binary.BigEndian.Uint32(buf[1:5]))
			if n < 4 || len(buf) < 1+n {
				break
			}
			fr := frame{typ: buf[0], body: append([]byte(nil), buf[5:1+n]...)}
			frames = append(frames, fr)
			buf = buf[1+n:]
			if stop != nil && stop(fr) {
				return frames, false, nil
			}
		}
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset") {
				return frames, true, err
			}
			return frames, false, err
		}
	}
}

// readUntilClosed reads backend frames from c until pgferry closes the
// connection; it fails the test if that does not happen within 10 s (the
// connection was left hanging). A connection reset counts as closed.
func readUntilClosed(t *testing.T, c net.Conn) []frame {
	t.Helper()
	frames, closed, err := readFrames(c, 10*time.Second, nil)
	if !closed {
		t.Fatalf("pgferry did not close the connection (read: %v; frames so far: %s)", err, describe(frames))
	}
	return frames
}

// errorFields decodes an ErrorResponse or NoticeResponse body into its
// fields keyed by field code ('S', 'C', 'M', ...).
func errorFields(body []byte) map[byte]string {
	fields := make(map[byte]string)
	for len(body) > 0 && body[0] != 0 {
		code := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		fields[code] = string(body[1 : 1+end])
		body = body[2+end:]
	}
	return fields
}

// errorsIn returns the decoded ErrorResponses among frames.
func errorsIn(frames []frame) []map[byte]string {
	var out []map[byte]string
	for _, f := range frames {
		if f.typ == 'E' {
			out = append(out, errorFields(f.body))
		}
	}
	return out
}

// describe renders frames for a failure message: their type bytes, with
// severity, SQLSTATE and message of each error.
func describe(frames []frame) string {
	var b strings.Builder
	for i, f := range frames {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteByte(f.typ)
		if f.typ == 'E' {
			fl := errorFields(f.body)
			b.WriteString("(" + fl['S'] + " " + fl['C'] + " " + strconv.Quote(fl['M']) + ")")
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// writeSelfSigned signs tmpl with a fresh P-256 key of its own, valid from
// an hour ago to an hour from now, writes the certificate and the key as
// PEM files in a temporary directory and returns their paths.
func writeSelfSigned(t *testing.T, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: kder},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// pipelineEnd follows every pipeline: an empty simple Query, whose
// EmptyQueryResponse and ReadyForQuery mark the end of the answers.
// (After the pipeline's last Sync, it is never skipped, and it runs in a
// failed transaction too.)
var pipelineEnd = &pgproto3.Query{String: ""}

// pipelineAnswers sends msgs and then pipelineEnd on a fresh connection to
// dsn and returns the answers' words (see word; "I" an
// EmptyQueryResponse), up to the end's ReadyForQuery, or up to a timeout
// or a lost connection, named last.
func pipelineAnswers(t *testing.T, dsn string, msgs []pgproto3.FrontendMessage) string {
	return pipelineRounds(t, dsn, [][]pgproto3.FrontendMessage{msgs})
}

// pipelineRounds is pipelineAnswers for messages sent in rounds, each
// followed by pipelineEnd, whose answers are read before the next round.
func pipelineRounds(t *testing.T, dsn string, rounds [][]pgproto3.FrontendMessage) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer pc.Close(context.Background())
	fe := pc.Frontend()
	var out []string
	for _, msgs := range rounds {
		for _, m := range msgs {
			fe.Send(m)
		}
		fe.Send(pipelineEnd)
		if err := fe.Flush(); err != nil {
			return strings.Join(append(out, "(send: "+err.Error()+")"), " ")
		}
		if !readToEnd(ctx, pc, &out) {
			break
		}
	}
	return strings.Join(out, " ")
}

// readToEnd reads answers into out up to pipelineEnd's ReadyForQuery; at
// a timeout or a lost connection it notes which and returns false.
func readToEnd(ctx context.Context, pc *pgconn.PgConn, out *[]string) bool {
	ended := false
	for {
		msg, err := pc.ReceiveMessage(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				*out = append(*out, "(no more answers in 10 s)")
			} else {
				*out = append(*out, "(lost: "+err.Error()+")")
			}
			return false
		}
		if _, ok := msg.(*pgproto3.EmptyQueryResponse); ok {
			*out = append(*out, "I")
			ended = true
			continue
		}
		w := word(msg)
		if w == "" {
			continue
		}
		*out = append(*out, w)
		if ended && w == "Z" {
			return true
		}
	}
}
