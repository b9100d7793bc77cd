package protocol

import (
	"bytes"
	"encoding/binary"
)

// Message type bytes pgferry acts on (protocol-message-formats.html).
const (
	// Client to server.
	MsgQuery        = 'Q'
	MsgParse        = 'P'
	MsgBind         = 'B'
	MsgDescribe     = 'D'
	MsgExecute      = 'E'
	MsgClose        = 'C'
	MsgSync         = 'S'
	MsgFlush        = 'H'
	MsgFunctionCall = 'F'
	MsgTerminate    = 'X'
	MsgCopyData     = 'd'
	MsgCopyDone     = 'c'
	MsgCopyFail     = 'f'
	MsgPassword     = 'p'

	// Server to client.
	MsgReadyForQuery        = 'Z'
	MsgErrorResponse        = 'E'
	MsgNoticeResponse       = 'N'
	MsgParameterStatus      = 'S'
	MsgNotification         = 'A'
	MsgBackendKeyData       = 'K'
	MsgAuthentication       = 'R'
	MsgParseComplete        = '1'
	MsgBindComplete         = '2'
	MsgCloseComplete        = '3'
	MsgCommandComplete      = 'C'
	MsgEmptyQuery           = 'I'
	MsgPortalSuspended      = 's'
	MsgNoData               = 'n'
	MsgRowDescription       = 'T'
	MsgParameterDescription = 't'
	MsgDataRow              = 'D'
	MsgCopyInResponse       = 'G'
	MsgCopyOutResponse      = 'H'
	MsgCopyBothResponse     = 'W'
	MsgFunctionCallResponse = 'V'
)

// Transaction status bytes of ReadyForQuery.
const (
	TxIdle   byte = 'I'
	TxInTx   byte = 'T'
	TxFailed byte = 'E'
)

// Body returns a frame's body (after type and length).
func Body(frame []byte) []byte { return frame[headerSize:] }

// CString splits a NUL-terminated string off the front of b. ok is false
// when there is no terminator.
func CString(b []byte) (s, rest []byte, ok bool) {
	if len(b) > 0 && b[0] == 0 {
		// The empty name of the unnamed statement or portal, most of the
		// names the relay splits off: no scan.
		return b[:0], b[1:], true
	}
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

func appendHeader(dst []byte, typ byte, bodyLen int) []byte {
	dst = append(dst, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(bodyLen+4))
}

// AppendReadyForQuery appends ReadyForQuery with the given status.
func AppendReadyForQuery(dst []byte, status byte) []byte {
	return append(appendHeader(dst, MsgReadyForQuery, 1), status)
}

// AppendEmpty appends a message with an empty body (ParseComplete,
// BindComplete, CloseComplete, NoData, Sync, Flush, Terminate...).
func AppendEmpty(dst []byte, typ byte) []byte { return appendHeader(dst, typ, 0) }

// AppendCommandComplete appends CommandComplete with the given tag.
func AppendCommandComplete(dst []byte, tag string) []byte {
	dst = appendHeader(dst, MsgCommandComplete, len(tag)+1)
	dst = append(dst, tag...)
	return append(dst, 0)
}

// AppendQuery appends a simple Query message.
func AppendQuery(dst []byte, sql string) []byte {
	dst = appendHeader(dst, MsgQuery, len(sql)+1)
	dst = append(dst, sql...)
	return append(dst, 0)
}

// AppendParameterStatus appends a ParameterStatus message.
func AppendParameterStatus(dst []byte, name, value string) []byte {
	dst = appendHeader(dst, MsgParameterStatus, len(name)+len(value)+2)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// AppendBackendKeyData appends BackendKeyData.
func AppendBackendKeyData(dst []byte, pid, key uint32) []byte {
	dst = appendHeader(dst, MsgBackendKeyData, 8)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return binary.BigEndian.AppendUint32(dst, key)
}

// AppendAuthentication appends an Authentication message with the given
// code and extra payload (AuthenticationOk is code 0 with no payload).
func AppendAuthentication(dst []byte, code uint32, payload []byte) []byte {
	dst = appendHeader(dst, MsgAuthentication, 4+len(payload))
	dst = binary.BigEndian.AppendUint32(dst, code)
	return append(dst, payload...)
}

// AppendParse appends a Parse message.
func AppendParse(dst []byte, name, query string, paramOIDs []byte) []byte {
	// paramOIDs is the raw int16 count + int32 OIDs section as received.
	dst = appendHeader(dst, MsgParse, len(name)+1+len(query)+1+len(paramOIDs))
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, query...)
	dst = append(dst, 0)
	return append(dst, paramOIDs...)
}

// AppendClose appends a Close message for a statement ('S') or portal ('P').
func AppendClose(dst []byte, kind byte, name string) []byte {
	dst = appendHeader(dst, MsgClose, 1+len(name)+1)
	dst = append(dst, kind)
	dst = append(dst, name...)
	return append(dst, 0)
}

// AppendTerminate appends Terminate.
func AppendTerminate(dst []byte) []byte { return AppendEmpty(dst, MsgTerminate) }

// ParseErrorFields extracts SQLSTATE and message from an ErrorResponse or
// NoticeResponse frame. The returned slices alias the frame.
func ParseErrorFields(frame []byte) (severity, code, message []byte) {
	b := Body(frame)
	for len(b) > 0 && b[0] != 0 {
		f := b[0]
		v, rest, ok := CString(b[1:])
		if !ok {
			return
		}
		switch f {
		case 'V':
			severity = v
		case 'S':
			if severity == nil {
				severity = v
			}
		case 'C':
			code = v
		case 'M':
			message = v
		}
		b = rest
	}
	return
}

// RFQStatus returns the status byte of a ReadyForQuery frame, or 0 if the
// frame is malformed.
func RFQStatus(frame []byte) byte {
	if len(frame) != headerSize+1 {
		return 0
	}
	return frame[headerSize]
}

// RenameInError returns a copy of frame, an ErrorResponse or
// NoticeResponse, appended to dst, whose message field ('M') says name
// where it said old, at its first mention: an error PostgreSQL raised
// about a statement of one name, told as about another. The rest of the
// frame is kept as the server sent it. A frame whose message does not
// mention old is copied as it is.
func RenameInError(dst, frame []byte, old, name string) []byte {
	start := len(dst)
	dst = append(dst, frame[0], 0, 0, 0, 0)
	b := Body(frame)
	for len(b) > 0 && b[0] != 0 {
		f := b[0]
		v, rest, ok := CString(b[1:])
		if !ok {
			return append(dst[:start], frame...)
		}
		dst = append(dst, f)
		if i := bytes.Index(v, []byte(old)); f == 'M' && i >= 0 {
			dst = append(dst, v[:i]...)
			dst = append(dst, name...)
			dst = append(dst, v[i+len(old):]...)
			old = "\x00" // (the first mention only)
		} else {
			dst = append(dst, v...)
		}
		dst = append(dst, 0)
		b = rest
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}
