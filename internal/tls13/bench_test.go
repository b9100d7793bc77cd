package tls13

import (
	"io"
	"net"
	"testing"
)

// BenchmarkServerRoundTrip is one 200-byte message from a crypto/tls
// client and its echo, with the server side on crypto/tls or taken over:
//
//	go test -run - -bench ServerRoundTrip ./internal/tls13
func BenchmarkServerRoundTrip(b *testing.B) {
	for _, takeover := range []bool{false, true} {
		b.Run(map[bool]string{false: "crypto-tls", true: "tls13"}[takeover], func(b *testing.B) {
			srv, cfg, client, tap := handshake(b, serverConfig(b), clientConfig(), nil)
			var server net.Conn = srv
			if takeover {
				server = tap.Takeover(srv, cfg)
			} else {
				tap.done = true // reads pass through, as after a declined takeover
			}
			msg, got := pattern(200, 1), make([]byte, 200)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				client.Write(msg)
				io.ReadFull(server, got)
				server.Write(got)
				io.ReadFull(client, got)
			}
		})
	}
}
