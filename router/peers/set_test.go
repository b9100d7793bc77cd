package peers_test

import (
	"context"
	"net"
	"slices"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/peers"
)

// fakePeer accepts cancel requests on 127.0.0.1 and reports the pid and
// key of each, closing the connection after it as PostgreSQL does.
func fakePeer(t *testing.T) (configs.Peer, <-chan [2]uint32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan [2]uint32, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			st, err := protocol.ReadStartup(c)
			if err != nil {
				t.Errorf("the peer read %v", err)
			} else {
				got <- [2]uint32{st.CancelPID, st.CancelKey}
			}
			c.Close() // after the report: Forward returns once it sees this
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return configs.Peer{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}, got
}

func TestForwardSendsTheCancelToTheListedPeerOneTTLStepLower(t *testing.T) {
	p, got := fakePeer(t)
	cfg := configs.Default()
	cfg.PeerID = 1
	cfg.Peers = map[string]configs.Peer{"2": p}
	pid, key := peers.Stamp(0x12345678, 0x9abcdef0, 2)
	var ps peers.Set
	ps.Forward(context.Background(), cfg, nil, zap.NewNop(), 2, pid, key)
	select {
	case k := <-got:
		if k != [2]uint32{pid, key - 1} {
			t.Fatalf("the peer got %#08x, %#08x; want %#08x, %#08x", k[0], k[1], pid, key-1)
		}
	default:
		t.Fatal("Forward returned before the peer had the cancel request")
	}
}

func TestForwardDropsWhatItCannotSend(t *testing.T) {
	p, got := fakePeer(t)
	tests := []struct {
		name     string
		peersDNS string
		id       int
		key      uint32
		want     string
	}{
		{"a listed peer's key with its TTL exhausted", "", 2, 0x9abcdef0, "cancel request dropped: its forwarding TTL is exhausted"},
		{"an unlisted peer's key without peers_dns", "", 3, 0x9abcdef3, "cancel request for an unknown peer dropped"},
		// peers_dns is asked on the first hop only (a full TTL), so
		// this one needs no lookup.
		{"an unlisted peer's key after its first hop", "pgferry-peers.invalid", 3, 0x9abcdef2, "cancel request for an unknown peer dropped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configs.Default()
			cfg.PeerID = 1
			cfg.Peers = map[string]configs.Peer{"2": p}
			cfg.PeersDNS = tc.peersDNS
			core, logs := observer.New(zapcore.DebugLevel)
			var ps peers.Set
			ps.Forward(context.Background(), cfg, nil, zap.New(core), tc.id, 0x12345678, tc.key)
			if msgs := logs.All(); len(msgs) != 1 || msgs[0].Message != tc.want {
				t.Errorf("logged %v; want only %q", msgs, tc.want)
			}
			select {
			case k := <-got:
				t.Errorf("the peer got %#08x, %#08x; want nothing", k[0], k[1])
			default:
			}
		})
	}
}

func TestListGivesThePeersEntriesInOrderOfPeerIDWithTheDefaultPort(t *testing.T) {
	cfg := configs.Default()
	cfg.Peers = map[string]configs.Peer{
		"3": {Host: "pgferry-3.example"},
		"1": {Host: "10.0.0.1", Port: 6433},
		"2": {Host: "::1", Port: 7000},
	}
	var ps peers.Set
	got := ps.List(cfg, nil, zap.NewNop(), false)
	want := []string{"10.0.0.1:6433", "[::1]:7000", "pgferry-3.example:6432"}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %q; want %q", got, want)
	}
}
