// Package tls13 carries on the TLS 1.3 connections of clients once
// crypto/tls has run their handshake: from then on the records are sealed
// and opened here, with the keys crypto/tls reported through its
// KeyLogWriter, and crypto/tls's connection is let go.
//
// Why: a crypto/tls connection keeps, for as long as it lives, its record
// buffers at their high-water mark, its handshake buffer and the AEAD
// state of both directions: about 6 KiB, most of what an idle TLS client
// cost pgferry. A Conn keeps the two traffic secrets, the keys and
// sequence numbers derived from them (under 400 bytes); it borrows buffers
// from a pool only while bytes are in flight, and while its session is
// parked it drops its AEADs too (Park) and makes them again on the next
// use.
//
// How the hand-over is exact (Tap): during the handshake the tap under
// crypto/tls hands it no byte past the end of the record it is reading, so
// when Handshake returns crypto/tls has consumed the handshake and nothing
// else, and the socket still holds whatever the client sent next. Session
// tickets are off, so crypto/tls wrote no record under the application
// keys either: both directions start at sequence number 0 with the
// CLIENT_TRAFFIC_SECRET_0 and SERVER_TRAFFIC_SECRET_0 the key log caught.
// The application data, KeyUpdates and alerts that follow are all this
// package's; crypto/tls sees none of them.
//
// What a Conn handles after the handshake: application data both ways,
// KeyUpdate from the client, in a record of its own as every TLS stack
// sends it (answered with one of its own when the client asks; requests
// made before pgferry's next data share one answer, as RFC 8446 4.6.3
// allows), close_notify and the other alerts. A client's NewSessionTicket
// or post-handshake authentication message is a protocol error here, as it
// is for crypto/tls's server, which offers neither. Cipher suites: the three
// of TLS 1.3 (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). TLS 1.2
// connections stay with crypto/tls.
//
// Build tag pgferry_notls13 leaves every connection with crypto/tls, for
// diagnosis.
package tls13
