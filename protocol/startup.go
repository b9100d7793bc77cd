package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Codes that may stand in a startup packet's version field
// (PostgreSQL: src/include/libpq/pqcomm.h).
const (
	ProtocolVersion30 uint32 = 3 << 16
	CancelRequestCode uint32 = 1234<<16 | 5678
	SSLRequestCode    uint32 = 1234<<16 | 5679
	GSSENCRequestCode uint32 = 1234<<16 | 5680
	// PeerLinkCode opens a link between peered pgferry instances (see
	// router/fleet): "pgfr" in ASCII, a major version PostgreSQL never
	// uses, so a server that is not pgferry refuses it.
	PeerLinkCode uint32 = 0x70676672
)

// MaxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH: longer startup
// packets are refused before they are buffered.
const MaxStartupPacket = 10000

// Startup is a decoded startup-phase packet: a StartupMessage, SSLRequest,
// GSSENCRequest or CancelRequest.
type Startup struct {
	// Code is the protocol version or the request code.
	Code uint32
	// Params holds a StartupMessage's parameters in the order sent.
	Params []Param
	// ProtocolOptions lists `_pq_.` protocol options the client asked for;
	// pgferry supports none and reports them in NegotiateProtocolVersion.
	ProtocolOptions []string
	// CancelPID and CancelKey come from a CancelRequest.
	CancelPID, CancelKey uint32
}

// Param is one startup parameter.
type Param struct{ Key, Value string }

// Major returns the protocol major version of a StartupMessage.
func (s *Startup) Major() uint32 { return s.Code >> 16 }

// Minor returns the protocol minor version of a StartupMessage.
func (s *Startup) Minor() uint32 { return s.Code & 0xffff }

// Get returns the value of a startup parameter.
func (s *Startup) Get(key string) string {
	for _, p := range s.Params {
		if p.Key == key {
			return p.Value
		}
	}
	return ""
}

// ReadStartup reads one startup-phase packet. Malformed packets give a FATAL
// *Error with SQLSTATE 08P01 that can be sent to the client as is.
func ReadStartup(r io.Reader) (*Startup, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:4])))
	if n < 8 || n > MaxStartupPacket {
		return nil, Fatal(SQLStateProtocolViolation, fmt.Sprintf("invalid startup packet length %d", n))
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, noEOF(err)
	}
	return ParseStartup(body)
}

// ParseStartup decodes a startup packet body (everything after the length).
func ParseStartup(body []byte) (*Startup, error) {
	if len(body) < 4 {
		return nil, Fatal(SQLStateProtocolViolation, "invalid startup packet")
	}
	s := &Startup{Code: binary.BigEndian.Uint32(body)}
	rest := body[4:]
	switch s.Code {
	case SSLRequestCode, GSSENCRequestCode, PeerLinkCode:
		if len(rest) != 0 {
			return nil, Fatal(SQLStateProtocolViolation, "invalid SSL/GSS negotiation packet")
		}
		return s, nil
	case CancelRequestCode:
		if len(rest) != 8 {
			return nil, Fatal(SQLStateProtocolViolation, "invalid cancel request packet")
		}
		s.CancelPID = binary.BigEndian.Uint32(rest)
		s.CancelKey = binary.BigEndian.Uint32(rest[4:])
		return s, nil
	}
	if s.Major() != 3 {
		return nil, Fatal(SQLStateFeatureNotSupported,
			fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0", s.Major(), s.Minor()))
	}
	// Each parameter is two NUL-terminated strings: one allocation for
	// the usual few, sized before the packet is checked, so bounded (a
	// packet of NULs must not cost more than its own size to refuse). The
	// names and values are substrings of one copy of the packet.
	s.Params = make([]Param, 0, min(bytes.Count(rest, []byte{0})/2, 16))
	all := string(rest)
	for {
		if len(rest) == 0 {
			return nil, Fatal(SQLStateProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		if rest[0] == 0 {
			if len(rest) != 1 {
				return nil, Fatal(SQLStateProtocolViolation, "invalid startup packet layout: data after terminator")
			}
			break
		}
		k := bytes.IndexByte(rest, 0)
		if k < 0 {
			return nil, Fatal(SQLStateProtocolViolation, "invalid startup packet layout: unterminated parameter name")
		}
		key := all[len(all)-len(rest):][:k]
		rest = rest[k+1:]
		v := bytes.IndexByte(rest, 0)
		if v < 0 {
			return nil, Fatal(SQLStateProtocolViolation, "invalid startup packet layout: unterminated value for "+safeName(key))
		}
		val := all[len(all)-len(rest):][:v]
		rest = rest[v+1:]
		if !utf8.ValidString(key) || !utf8.ValidString(val) {
			return nil, Fatal(SQLStateProtocolViolation, "invalid UTF-8 in startup packet")
		}
		if strings.HasPrefix(key, "_pq_.") {
			s.ProtocolOptions = append(s.ProtocolOptions, key)
			continue
		}
		s.Params = append(s.Params, Param{Key: key, Value: val})
	}
	if s.Get("user") == "" {
		return nil, Fatal(SQLStateInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	return s, nil
}

// safeName bounds a client-supplied name before it is echoed in an error.
func safeName(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return fmt.Sprintf("%q", s)
}

// AppendNegotiateProtocolVersion appends a NegotiateProtocolVersion message
// telling the client that pgferry speaks 3.0 and none of the listed options.
func AppendNegotiateProtocolVersion(dst []byte, options []string) []byte {
	start := len(dst)
	dst = append(dst, 'v', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, 0) // newest minor version supported
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(options)))
	for _, o := range options {
		dst = append(dst, o...)
		dst = append(dst, 0)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// AppendStartupMessage appends a protocol 3.0 StartupMessage.
func AppendStartupMessage(dst []byte, params []Param) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, ProtocolVersion30)
	for _, p := range params {
		dst = append(dst, p.Key...)
		dst = append(dst, 0)
		dst = append(dst, p.Value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// AppendCancelRequest appends a CancelRequest packet.
func AppendCancelRequest(dst []byte, pid, key uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 16)
	dst = binary.BigEndian.AppendUint32(dst, CancelRequestCode)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return binary.BigEndian.AppendUint32(dst, key)
}

// AppendSSLRequest appends an SSLRequest packet.
func AppendSSLRequest(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 8)
	return binary.BigEndian.AppendUint32(dst, SSLRequestCode)
}
