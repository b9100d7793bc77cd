package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ServerError is an ErrorResponse a server sent. Frame, when set, holds the
// message as received, so it can be relayed to a client untouched.
type ServerError struct {
	Frame   []byte
	Code    string
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error %s: %s", e.Code, e.Message)
}

// ErrUnexpectedMessage is returned by Exec for a message that has no place
// in a simple query's reply (a CopyInResponse, say).
var ErrUnexpectedMessage = errors.New("unexpected message in a simple query's reply")

// Exec runs sql as one simple Query on the connection framed by rd and w
// and reads the reply through its ReadyForQuery ("Simple Query" in the
// PostgreSQL docs' "Message Flow"), returning that ReadyForQuery's
// transaction status. Every DataRow, CommandComplete, ParameterStatus,
// RowDescription, EmptyQueryResponse, NoticeResponse and
// NotificationResponse goes to each (when not nil), valid only until each
// returns; an error from each ends the exchange at once (the connection is
// then mid-reply and its owner must close it). The first ErrorResponse is
// returned as a *ServerError once the ReadyForQuery has been read, so the
// connection is idle again. Exec blocks: bound it with a deadline on the
// connection. It is the one simple-query loop that the pool, the lag
// probe and the server reset share.
func Exec(rd *Reader, w *Writer, sql string, each func(typ byte, frame []byte) error) (status byte, err error) {
	w.SetBuffer(AppendQuery(w.Buffer(), sql))
	return reply(rd, w, each)
}

// ExecParams is Exec for a query with parameters: sql, whose $1, $2, ...
// are params (text, none NULL), goes as the unnamed statement of the
// extended protocol (Parse, Bind, Execute, Sync), so that no value is
// ever read as SQL, whatever the connection's client_encoding or
// standard_conforming_strings. ParseComplete and BindComplete are
// consumed; the rest is as Exec.
func ExecParams(rd *Reader, w *Writer, sql string, params []string, each func(typ byte, frame []byte) error) (status byte, err error) {
	b := AppendParse(w.Buffer(), "", sql, []byte{0, 0})
	size := 1 + 1 + 2 + 2 + 2 // portal, statement, no format codes, the count, no result formats
	for _, p := range params {
		size += 4 + len(p)
	}
	b = appendHeader(b, MsgBind, size)
	b = append(b, 0, 0, 0, 0) // portal "", statement "", zero format codes: text
	b = binary.BigEndian.AppendUint16(b, uint16(len(params)))
	for _, p := range params {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	b = append(b, 0, 0) // zero result format codes: text
	b = appendHeader(b, MsgExecute, 1+4)
	b = append(b, 0, 0, 0, 0, 0) // portal "", no row limit
	w.SetBuffer(AppendEmpty(b, MsgSync))
	return reply(rd, w, each)
}

// reply sends what w holds and reads the reply through its ReadyForQuery
// (see Exec).
func reply(rd *Reader, w *Writer, each func(typ byte, frame []byte) error) (status byte, err error) {
	if err := w.Flush(); err != nil {
		return 0, err
	}
	var srvErr *ServerError
	for {
		frame, err := rd.Next()
		if err != nil {
			return 0, err
		}
		switch typ := frame[0]; typ {
		case MsgReadyForQuery:
			if srvErr != nil {
				return RFQStatus(frame), srvErr
			}
			return RFQStatus(frame), nil
		case MsgErrorResponse:
			if srvErr == nil {
				_, code, msg := ParseErrorFields(frame)
				srvErr = &ServerError{Code: string(code), Message: string(msg)}
			}
		case MsgParseComplete, MsgBindComplete:
		case MsgDataRow, MsgCommandComplete, MsgParameterStatus, MsgRowDescription, MsgEmptyQuery,
			MsgNoticeResponse, MsgNotification:
			if each != nil {
				if err := each(typ, frame); err != nil {
					return 0, err
				}
			}
		default:
			return 0, fmt.Errorf("%w: %q", ErrUnexpectedMessage, typ)
		}
	}
}

// Column is one value of a DataRow.
type Column struct {
	Value []byte // aliases the frame; nil when Null
	Null  bool
}

// ErrMalformedDataRow reports a DataRow whose lengths do not add up.
var ErrMalformedDataRow = errors.New("malformed DataRow")

// ParseDataRow decodes the body of a DataRow ("Message Formats" in the
// PostgreSQL docs: Int16 column count, then per column an Int32 length, -1
// for NULL, and that many bytes), appending its columns to dst. The values
// alias body.
func ParseDataRow(body []byte, dst []Column) ([]Column, error) {
	if len(body) < 2 {
		return dst, fmt.Errorf("%w: no column count", ErrMalformedDataRow)
	}
	n := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	if n > len(body)/4 {
		return dst, fmt.Errorf("%w: %d columns claimed in %d bytes", ErrMalformedDataRow, n, len(body))
	}
	for i := 0; i < n; i++ {
		if len(body) < 4 {
			return dst, fmt.Errorf("%w: short", ErrMalformedDataRow)
		}
		l := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		switch {
		case l == -1:
			dst = append(dst, Column{Null: true})
		case l < 0 || int(l) > len(body):
			return dst, fmt.Errorf("%w: column length %d", ErrMalformedDataRow, l)
		default:
			dst = append(dst, Column{Value: body[:l:l]})
			body = body[l:]
		}
	}
	if len(body) != 0 {
		return dst, fmt.Errorf("%w: %d trailing bytes", ErrMalformedDataRow, len(body))
	}
	return dst, nil
}

// AppendDataRow appends a DataRow of text values (nil for NULL).
func AppendDataRow(dst []byte, values ...[]byte) []byte {
	n := 2
	for _, v := range values {
		n += 4 + len(v)
	}
	dst = appendHeader(dst, MsgDataRow, n)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// AppendParseRaw appends a Parse message with the statement name and the
// body after the name as it arrived from a client (query text, NUL,
// parameter type count and OIDs).
func AppendParseRaw(dst []byte, name string, rest []byte) []byte {
	dst = appendHeader(dst, MsgParse, len(name)+1+len(rest))
	dst = append(dst, name...)
	dst = append(dst, 0)
	return append(dst, rest...)
}

// AppendBindRenamed appends a Bind of portal to the statement stmt, with
// tail the rest of a client's Bind after its statement name (formats,
// parameters, result formats).
func AppendBindRenamed(dst, portal []byte, stmt string, tail []byte) []byte {
	dst = appendHeader(dst, MsgBind, len(portal)+1+len(stmt)+1+len(tail))
	dst = append(dst, portal...)
	dst = append(dst, 0)
	dst = append(dst, stmt...)
	dst = append(dst, 0)
	return append(dst, tail...)
}

// AppendDescribe appends a Describe of a statement ('S') or portal ('P').
func AppendDescribe(dst []byte, kind byte, name string) []byte {
	dst = appendHeader(dst, MsgDescribe, 1+len(name)+1)
	dst = append(dst, kind)
	dst = append(dst, name...)
	return append(dst, 0)
}
