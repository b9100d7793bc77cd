package tls13

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer that one goroutine may write while
// another reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOpenSSLTalksToATakenOverConnectionAndUpdatesItsKeys runs OpenSSL's
// s_client, another TLS implementation, against a taken-over connection in
// each suite, and has it ask for a key update halfway (its K command),
// which the connection must answer with its own.
func TestOpenSSLTalksToATakenOverConnectionAndUpdatesItsKeys(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (.ci/install installs it)")
	}
	for _, name := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan error, 1)
			base := serverConfig(t)
			go func() {
				raw, err := l.Accept()
				if err != nil {
					served <- err
					return
				}
				defer raw.Close()
				tap := NewTap(raw)
				cfg := ServerConfig(base)
				srv := tls.Server(tap, cfg)
				if err := srv.Handshake(); err != nil {
					served <- err
					return
				}
				conn := tap.Takeover(srv, cfg)
				if conn == nil {
					served <- errors.New("not taken over")
					return
				}
				if got := conn.Describe(); got != "TLS 1.3/"+name {
					served <- fmt.Errorf("described as %q", got)
					return
				}
				// Echo lines in upper case until "bye".
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						served <- fmt.Errorf("reading: %w", err)
						return
					}
					if _, err := conn.Write(bytes.ToUpper([]byte(line))); err != nil {
						served <- err
						return
					}
					if line == "bye\n" {
						served <- nil
						return
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", l.Addr().String(), "-tls1_3",
				"-ciphersuites", name)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out := &lockedBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// s_client takes a line as a command only if it starts what one
			// read of its stdin returns: each line goes once the last one's
			// effect shows (after the handshake, the first).
			for _, step := range []struct{ say, then string }{
				{"", "Verify return code"},
				{"before\n", "BEFORE"},
				{"K\n", "KEYUPDATE"}, // KeyUpdate, update_requested
				{"after\n", "AFTER"},
			} {
				stdin.Write([]byte(step.say))
				waitFor(t, func() bool { return strings.Contains(out.String(), step.then) })
			}
			stdin.Write([]byte("bye\n"))
			if err := <-served; err != nil {
				t.Fatalf("server: %v\nopenssl said:\n%s", err, out.String())
			}
			stdin.Close()
			cmd.Wait()
			for _, want := range []string{"BEFORE", "KEYUPDATE", "AFTER", "BYE"} {
				if !strings.Contains(out.String(), want) {
					t.Fatalf("openssl's output lacks %s:\n%s", want, out.String())
				}
			}
		})
	}
}
