package peers

// Peering, compatible with PgBouncer 1.19+: instances behind one TCP load
// balancer each write their peer_id into the cancel keys they hand out, so
// a CancelRequest that the balancer sends to another instance can be
// forwarded to the one holding the session. As in PgBouncer, the id sits in
// the second and third byte of the 8-byte key (the pid's middle bytes,
// low byte first), and the last two bits of the key are a TTL: 3 when
// handed out, one less per forward, dropped at 0, so forwards cannot loop.
// That leaves 45 random bits in a key.

// TTLMask marks the TTL bits of a cancel key's last byte: all set in a key
// as Stamp hands it out, one less after each forward.
const TTLMask = 0x03

// IDOf reads the peer id from a cancel key's pid.
func IDOf(pid uint32) int { return int(pid>>16&0xFF) | int(pid>>8&0xFF)<<8 }

// Stamp writes peer id id and a full TTL into a random cancel key. Only
// the id's low 16 bits fit; the key's other bits are left as they are.
func Stamp(pid, key uint32, id int) (uint32, uint32) {
	pid = pid&^0x00FFFF00 | uint32(id&0xFF)<<16 | uint32(id>>8&0xFF)<<8
	return pid, key | TTLMask
}
