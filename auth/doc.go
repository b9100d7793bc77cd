// Package auth implements the authentication exchanges pgferry takes part in,
// as pure message-level state machines: they consume and produce the payloads
// of PostgreSQL authentication messages and never read from or write to a
// network connection.
//
// Client-facing (pgferry acts as the server for applications):
//   - [Credential] and [Store] hold what pgferry knows about client users'
//     passwords (plain text, MD5 hash or SCRAM-SHA-256 verifier), loaded from a
//     PgBouncer-style auth_file with [ParseUserlist] or [LoadUserlist].
//   - [SCRAMServer] runs SCRAM-SHA-256 and SCRAM-SHA-256-PLUS as the server;
//     [NewSCRAMServerForUnknownUser] lets an exchange for a user that does not
//     exist fail exactly like a wrong password, as PostgreSQL does.
//   - [VerifyMD5] and [VerifyPlain] check AuthenticationMD5Password and
//     AuthenticationCleartextPassword responses.
//
// Server-facing (pgferry logs in to PostgreSQL as a client):
//   - [SCRAMClient] runs SCRAM-SHA-256 as the client, with a small process-wide
//     cache of derived keys so that opening many server connections with the
//     same password does not run PBKDF2 for each one.
//   - [MD5Response] answers AuthenticationMD5Password.
//
// The protocol follows RFC 5802 and RFC 7677, the PostgreSQL documentation
// "SASL Authentication" (protocol-flow.html#SASL-AUTHENTICATION) and
// src/backend/libpq/auth-scram.c, whose behaviour is matched where the RFCs
// leave room (see the comments on each check).
//
// Errors meant for the application are [*ProtocolError] (safe to show, never
// contain secret material) and [ErrPasswordMismatch]; building the
// ErrorResponse is the job of package protocol. Secrets never appear in
// errors or in the fmt output of any type of this package.
//
// Package auth must not import pool, router, metrics, cmd, zap or prometheus,
// must not know about pooling or routing, and does not log. The subpackage
// auth/entra provides Entra ID token sources.
package auth
