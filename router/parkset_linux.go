//go:build linux && !pgferry_nopark

// The parker's set: the sessions it holds, found by their epoll events'
// data without a map.

package router

// parkSlot is one place in the parker's slot table. A session gets one
// when its client socket is added to the epoll set (park, or entering the
// relay loop) and gives it up once the socket is out of it (resume,
// unloop); meanwhile its events' data name the slot and its generation.
// held says the session is in the set: waiting, owned by the parker, and
// whoever clears held under mu (an event, a wake, a kill, a grant, the
// sweep) owns it from there.
type parkSlot struct {
	ss   *session
	gen  uint32 // bumped as the slot is given up: older events miss
	held bool
}

// slotGenMask keeps a slot's generation within the event data's bits 32
// to 61 (bit 62 is serverKeyBit; stopKey and nudgeKey are 0 and all ones).
const slotGenMask = 1<<30 - 1

// keyLocked returns the epoll data of the session's client socket (its
// server socket's adds serverKeyBit), giving the session a slot first if
// it has none. mu is held.
func (p *parker) keyLocked(ss *session) uint64 {
	if ss.slot < 0 {
		var i int32
		if n := len(p.freeSlots); n > 0 {
			i = p.freeSlots[n-1]
			p.freeSlots = p.freeSlots[:n-1]
		} else {
			i = int32(len(p.slots))
			p.slots = append(p.slots, parkSlot{})
		}
		p.slots[i].ss = ss
		ss.slot = i
	}
	return uint64(ss.slot) + 1 | uint64(p.slots[ss.slot].gen&slotGenMask)<<32
}

// releaseSlot gives up the session's slot once its client socket is out
// of the epoll set: no event of it can come any more, and one read before
// carries the old generation.
func (p *parker) releaseSlot(ss *session) {
	p.mu.Lock()
	p.releaseSlotLocked(ss)
	p.mu.Unlock()
}

func (p *parker) releaseSlotLocked(ss *session) {
	if ss.slot < 0 {
		return
	}
	if p.slots[ss.slot].held {
		p.unholdLocked(ss)
	}
	s := &p.slots[ss.slot]
	s.ss = nil
	s.gen++
	p.freeSlots = append(p.freeSlots, ss.slot)
	ss.slot = -1
}

// takeKeyLocked takes the session an event's data name out of the set and
// returns it, or nil if it is not held there any more (taken by a wake
// meanwhile, or an event from before its slot changed hands).
func (p *parker) takeKeyLocked(key uint64) *session {
	i := int(uint32(key)) - 1
	if i < 0 || i >= len(p.slots) {
		return nil
	}
	s := &p.slots[i]
	if !s.held || s.gen&slotGenMask != uint32(key>>32)&slotGenMask {
		return nil
	}
	ss := s.ss
	p.unholdLocked(ss)
	return ss
}

// heldLocked reports whether ss is in the set.
func (p *parker) heldLocked(ss *session) bool {
	return ss.slot >= 0 && p.slots[ss.slot].held
}

// unholdLocked takes ss, which is held, out of the set.
func (p *parker) unholdLocked(ss *session) {
	p.slots[ss.slot].held = false
	p.held--
	if ss.loop != 0 {
		p.inLoop--
	}
}

// eachHeldLocked calls f for each session in the set.
func (p *parker) eachHeldLocked(f func(ss *session)) {
	for i := range p.slots {
		if s := &p.slots[i]; s.held {
			f(s.ss)
		}
	}
}
