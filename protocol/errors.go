package protocol

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Severities as sent in the S and V fields of an ErrorResponse.
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
)

// Error is a client-facing error: what pgferry itself tells an application.
// Its text is curated and never contains secrets. FATAL errors end the
// session after being sent; ERROR leaves it usable.
type Error struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
}

// Fatal builds a FATAL client-facing error.
func Fatal(code, msg string) *Error { return &Error{Severity: SeverityFatal, Code: code, Message: msg} }

// NewError builds an ERROR-level client-facing error.
func NewError(code, msg string) *Error {
	return &Error{Severity: SeverityError, Code: code, Message: msg}
}

// Error implements error.
func (e *Error) Error() string { return e.Message + " (SQLSTATE " + e.Code + ")" }

// IsFatal reports whether the session ends after this error.
func (e *Error) IsFatal() bool { return e.Severity == SeverityFatal }

// AppendFrame appends the ErrorResponse frame for e to dst. It fills S, V, C
// and M (and D/H when set): V carries the unlocalized severity that clients
// such as pgx key on.
func (e *Error) AppendFrame(dst []byte) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
	out, err := msg.Encode(dst)
	if err != nil {
		// Encode only fails for messages over 1 GiB; ours are tiny.
		return dst
	}
	return out
}

// NoticeFrame appends a NoticeResponse with severity NOTICE to dst.
func NoticeFrame(dst []byte, code, msg string) []byte {
	n := pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: code, Message: msg}
	out, err := n.Encode(dst)
	if err != nil {
		return dst
	}
	return out
}

// IsDisconnect reports whether err says the peer went away or the
// connection was closed: end of stream, possibly mid-message, a reset, a
// broken pipe, or a closed socket. Such errors end a session quietly.
func IsDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
