package peers_test

import (
	"encoding/binary"
	"testing"

	"github.com/pgferry/pgferry/router/peers"
)

func TestCancelKeysCarryThePeerIDWherePgBouncerPutsIt(t *testing.T) {
	for _, id := range []int{1, 2, 255, 256, 4097, 16383} {
		pid, key := peers.Stamp(0x7fffffff, 0x12345670, id)
		var b [8]byte
		binary.BigEndian.PutUint32(b[:4], pid)
		binary.BigEndian.PutUint32(b[4:], key)
		// PgBouncer: cancel_key[1] + (cancel_key[2] << 8), TTL in the low
		// two bits of cancel_key[7].
		if got := int(b[1]) + int(b[2])<<8; got != id || peers.IDOf(pid) != id {
			t.Errorf("peer id %d stamped as %d (IDOf %d)", id, got, peers.IDOf(pid))
		}
		if b[7]&peers.TTLMask != peers.TTLMask {
			t.Errorf("peer id %d: TTL bits %02b, want 11", id, b[7]&peers.TTLMask)
		}
		if b[0] != 0x7f || b[3] != 0xff || b[4] != 0x12 {
			t.Errorf("peer id %d: random bits outside the id and TTL changed: % x", id, b)
		}
	}
}

func TestAStampedKeyGivesBackItsPeerIDAndKeepsItsOtherBits(t *testing.T) {
	tests := []struct {
		name     string
		pid, key uint32
		id       int
		wantPID  uint32
		wantKey  uint32
	}{
		{"id 1 into zero bits", 0, 0, 1, 0x00010000, 0x00000003},
		{"id 1 over set bits", 0x7fffffff, 0xfffffffc, 1, 0x7f0100ff, 0xffffffff},
		{"a two-byte id, low byte first", 0x12345678, 0x9abcdef0, 0x0201, 0x12010278, 0x9abcdef3},
		{"the largest id that fits", 0x40000000, 0x00000001, 0xffff, 0x40ffff00, 0x00000003},
		{"a key already at full TTL", 0x00000000, 0x00000003, 7, 0x00070000, 0x00000003},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, key := peers.Stamp(tc.pid, tc.key, tc.id)
			if pid != tc.wantPID || key != tc.wantKey {
				t.Fatalf("Stamp(%#08x, %#08x, %d) = %#08x, %#08x; want %#08x, %#08x", tc.pid, tc.key, tc.id, pid, key, tc.wantPID, tc.wantKey)
			}
			if got := peers.IDOf(pid); got != tc.id {
				t.Errorf("IDOf(%#08x) = %d; want %d", pid, got, tc.id)
			}
			if key&peers.TTLMask != peers.TTLMask {
				t.Errorf("TTL bits %02b; want 11", key&peers.TTLMask)
			}
			// Stamping again with the same id changes nothing.
			if p2, k2 := peers.Stamp(pid, key, tc.id); p2 != pid || k2 != key {
				t.Errorf("stamping twice gave %#08x, %#08x", p2, k2)
			}
		})
	}
}
