// Package protocol owns PostgreSQL v3 wire framing for pgferry: reading and
// forwarding frames as raw bytes, startup/SSL/cancel negotiation, the
// ErrorResponse builders that are the only way pgferry speaks an error to a
// client, and SQLSTATE constants.
//
// Frames are forwarded without decoding: a Reader peeks the 5-byte header and
// hands back the whole frame as a slice of its buffer, valid until the next
// call. Only what pgferry must act on is decoded (see the pool and router
// packages). Frames that do not fit in the 8 KiB buffer are streamed.
//
// This package must not import pool, router, zap or prometheus, and it never
// logs.
//
// Protocol reference: PostgreSQL documentation, chapter 55 "Frontend/Backend
// Protocol" (protocol-message-formats.html).
package protocol
