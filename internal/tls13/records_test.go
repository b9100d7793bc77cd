package tls13

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// seal is a record as a client would send it: inner (content, type and
// padding) sealed under c's sending keys, in a record whose header reads
// outer and version. c's sequence number moves on.
func (c *Conn) seal(outer byte, version uint16, inner []byte) []byte {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	aead, err := c.out.cipher(c.suite)
	if err != nil {
		panic(err)
	}
	b := []byte{outer, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[1:], version)
	binary.BigEndian.PutUint16(b[3:], uint16(len(inner)+tagLen))
	b = aead.Seal(b, c.out.nonce(), inner, b[:recordHeader])
	c.out.seq++
	return b
}

// inner is a TLSInnerPlaintext: content, its type, pad zeros.
func inner(content []byte, typ byte, pad int) []byte {
	return append(append(append([]byte{}, content...), typ), make([]byte, pad)...)
}

func TestEveryMalformedOrForgedRecordEndsTheConnectionWithItsAlertAndNoData(t *testing.T) {
	tests := []struct {
		name  string
		wire  func(client *Conn) []byte
		alert tls.AlertError // what the client is told
		data  string         // what is read before the failure
	}{
		{"an unencrypted change_cipher_spec after the handshake", func(*Conn) []byte {
			return []byte{20, 3, 3, 0, 1, 1}
		}, alertUnexpectedMessage, ""},
		{"an unencrypted alert after the handshake", func(*Conn) []byte {
			return []byte{typeAlert, 3, 3, 0, 2, 2, 40}
		}, alertUnexpectedMessage, ""},
		{"a record longer than 2^14+256", func(*Conn) []byte {
			return binary.BigEndian.AppendUint16([]byte{typeAppData, 3, 3}, maxCiphertext+1)
		}, alertRecordOverflow, ""},
		{"a record shorter than a tag", func(*Conn) []byte {
			return []byte{typeAppData, 3, 3, 0, 3, 1, 2, 3}
		}, alertBadRecordMAC, ""},
		{"an empty record", func(*Conn) []byte {
			return []byte{typeAppData, 3, 3, 0, 0}
		}, alertBadRecordMAC, ""},
		{"a flipped ciphertext bit", func(c *Conn) []byte {
			b := c.seal(typeAppData, 0x0303, inner([]byte("secret"), typeAppData, 0))
			b[recordHeader] ^= 1
			return b
		}, alertBadRecordMAC, ""},
		{"a flipped tag bit", func(c *Conn) []byte {
			b := c.seal(typeAppData, 0x0303, inner([]byte("secret"), typeAppData, 0))
			b[len(b)-1] ^= 0x80
			return b
		}, alertBadRecordMAC, ""},
		{"a changed legacy version (authenticated data)", func(c *Conn) []byte {
			b := c.seal(typeAppData, 0x0303, inner([]byte("secret"), typeAppData, 0))
			b[2] = 1
			return b
		}, alertBadRecordMAC, ""},
		{"a record cut short, its length fixed up", func(c *Conn) []byte {
			b := c.seal(typeAppData, 0x0303, inner([]byte("secret"), typeAppData, 0))
			b = b[:len(b)-1]
			binary.BigEndian.PutUint16(b[3:], uint16(len(b)-recordHeader))
			return b
		}, alertBadRecordMAC, ""},
		{"a record replayed", func(c *Conn) []byte {
			b := c.seal(typeAppData, 0x0303, inner([]byte("once"), typeAppData, 0))
			return append(b, b...)
		}, alertBadRecordMAC, "once"},
		{"a record skipped", func(c *Conn) []byte {
			c.seal(typeAppData, 0x0303, inner([]byte("lost"), typeAppData, 0))
			return c.seal(typeAppData, 0x0303, inner([]byte("next"), typeAppData, 0))
		}, alertBadRecordMAC, ""},
		{"an inner plaintext of zeros only", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, make([]byte, 20))
		}, alertUnexpectedMessage, ""},
		{"a sealed change_cipher_spec", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{1}, 20, 0))
		}, alertUnexpectedMessage, ""},
		{"an unknown inner content type", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte("x"), 99, 3))
		}, alertUnexpectedMessage, ""},
		{"an empty handshake record", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner(nil, typeHandshake, 5))
		}, alertUnexpectedMessage, ""},
		{"an empty alert record", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner(nil, typeAlert, 0))
		}, alertUnexpectedMessage, ""},
		{"an alert of three bytes", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{1, 0, 0}, typeAlert, 0))
		}, alertUnexpectedMessage, ""},
		{"a NewSessionTicket", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{4, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0}, typeHandshake, 0))
		}, alertUnexpectedMessage, ""},
		{"a Certificate", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{11, 0, 0, 4, 0, 0, 0, 0}, typeHandshake, 0))
		}, alertUnexpectedMessage, ""},
		{"a KeyUpdate with request 2", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{handshakeKeyUpdate, 0, 0, 1, 2}, typeHandshake, 0))
		}, alertIllegalParameter, ""},
		{"a KeyUpdate of length 2", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{handshakeKeyUpdate, 0, 0, 2, 0, 0}, typeHandshake, 0))
		}, alertDecodeError, ""},
		{"a KeyUpdate followed by more handshake in its record (RFC 8446 5.1)", func(c *Conn) []byte {
			ku := []byte{handshakeKeyUpdate, 0, 0, 1, 0}
			return c.seal(typeAppData, 0x0303, inner(append(ku, ku...), typeHandshake, 0))
		}, alertUnexpectedMessage, ""},
		{"a KeyUpdate split across records (see handshakeMessage)", func(c *Conn) []byte {
			first := c.seal(typeAppData, 0x0303, inner([]byte{handshakeKeyUpdate, 0}, typeHandshake, 0))
			return append(first, c.seal(typeAppData, 0x0303, inner([]byte{0, 1, 0}, typeHandshake, 0))...)
		}, alertUnexpectedMessage, ""},
		{"a KeyUpdate with application data in its record", func(c *Conn) []byte {
			return c.seal(typeAppData, 0x0303, inner([]byte{handshakeKeyUpdate, 0, 0, 1, 0, 'Q', 0, 0, 0, 4}, typeHandshake, 0))
		}, alertUnexpectedMessage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
			wire := tc.wire(client)
			if _, err := client.raw.Write(wire); err != nil {
				t.Fatal(err)
			}
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			var got []byte
			var err error
			for err == nil {
				var n int
				n, err = server.Read(buf)
				got = append(got, buf[:n]...)
			}
			if string(got) != tc.data {
				t.Errorf("read %q before the failure; want %q", got, tc.data)
			}
			if errors.Is(err, io.EOF) || isTimeout(err) {
				t.Fatalf("read failed with %v; want a protocol error", err)
			}
			if _, again := server.Read(buf); again == nil {
				t.Error("the next read succeeded")
			}
			if _, werr := server.Write([]byte("x")); werr == nil {
				t.Error("the connection still writes")
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, cerr := client.Read(buf)
			if ae, ok := errors.AsType[tls.AlertError](cerr); !ok || ae != tc.alert {
				t.Fatalf("the server failed with %v; the client was told %v, want alert %v", err, cerr, tc.alert)
			}
		})
	}
}

func TestPaddingEmptyRecordsAndManyRecordsInOneWriteReadAsTheirData(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "in one write", true: "a byte at a time"}[split], func(t *testing.T) {
			server, client := mirrored(t, tls.TLS_CHACHA20_POLY1305_SHA256)
			var wire []byte
			add := func(content []byte, typ byte, pad int) {
				wire = append(wire, client.seal(typeAppData, 0x0303, inner(content, typ, pad))...)
			}
			add([]byte("a"), typeAppData, 0)
			add(nil, typeAppData, 0)
			add(nil, typeAppData, 200)
			add([]byte("bc"), typeAppData, maxPlaintext-2) // the longest inner plaintext
			add([]byte{1, alertUserCanceled}, typeAlert, 7)
			add([]byte{handshakeKeyUpdate, 0, 0, 1, 0}, typeHandshake, 1)
			client.out.update(client.suite)
			add([]byte("d"), typeAppData, 0)
			add([]byte{1, alertCloseNotify}, typeAlert, 0)
			go func() {
				if !split {
					client.raw.Write(wire)
					return
				}
				for i := range wire {
					client.raw.Write(wire[i : i+1])
				}
			}()
			server.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(server)
			if err != nil || string(got) != "abcd" {
				t.Fatalf("read %q, %v; want \"abcd\" and the end of the stream", got, err)
			}
		})
	}
}
