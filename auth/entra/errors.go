package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// ErrClosed is the cause of a TokenError from a TokenSource that has been
// closed and holds no usable token.
var ErrClosed = errors.New("token source closed")

// TokenError reports that no usable token could be obtained for a database.
// Its message is safe to log and to show to operators: Reason is a bounded,
// single-line summary with secrets and tokens removed.
type TokenError struct {
	// Database is Config.Database.
	Database string
	// Reason is the sanitised cause, e.g.
	// "ManagedIdentityCredential authentication failed: HTTP 500".
	Reason string
	// Err is the underlying error. It may be long (azidentity errors include
	// the HTTP response), so log Error() rather than Err; any client secret is
	// already replaced in its text.
	Err error
}

// Error returns `could not obtain an Entra ID token for database "app": <reason>`.
func (e *TokenError) Error() string {
	return fmt.Sprintf("could not obtain an Entra ID token for database %q: %s", e.Database, e.Reason)
}

// Unwrap returns Err.
func (e *TokenError) Unwrap() error { return e.Err }

// Reason classifies token request failures for metrics (the reason label of
// pgferry_auth_entra_token_failures_total). The set is fixed so that label
// values stay bounded.
type Reason int

// Failure reasons; NumReasons is the number of them.
const (
	// ReasonTimeout: the request deadline passed or the network timed out.
	ReasonTimeout Reason = iota
	// ReasonHTTPError: the token endpoint answered with an error status.
	ReasonHTTPError
	// ReasonCredentialUnavailable: the credential cannot work in this
	// environment (no managed identity endpoint, az not logged in, missing
	// workload identity file or variables).
	ReasonCredentialUnavailable
	// ReasonOther: anything else (network errors, malformed responses).
	ReasonOther
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonTimeout:               "timeout",
	ReasonHTTPError:             "http_error",
	ReasonCredentialUnavailable: "credential_unavailable",
	ReasonOther:                 "other",
}

// ReasonName returns the metric label value of r ("timeout", "http_error",
// "credential_unavailable", "other"), or "unknown" if r is out of range.
func ReasonName(r Reason) string {
	if r < 0 || r >= NumReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// String returns ReasonName(r).
func (r Reason) String() string { return ReasonName(r) }

// nonRetriable is implemented by azidentity's credential-unavailable errors
// (and by AuthenticationFailedError, which classify checks first).
type nonRetriable interface{ NonRetriable() }

// classify maps a GetToken error to a Reason.
func classify(err error) Reason {
	var re *redactedError
	if errors.As(err, &re) {
		err = re.err
	}
	var ne net.Error
	var afe *azidentity.AuthenticationFailedError
	var rse *azcore.ResponseError
	var nr nonRetriable
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.As(err, &afe) && afe.RawResponse != nil, errors.As(err, &rse):
		return ReasonHTTPError
	case errors.As(err, &afe):
		return ReasonOther
	case errors.As(err, &nr):
		return ReasonCredentialUnavailable
	}
	return ReasonOther
}

// maxReasonLen bounds TokenError.Reason. azidentity errors run to dozens of
// lines (request, response body, troubleshooting link); the first line plus
// the status and Entra error codes is what an operator needs.
const maxReasonLen = 300

// jwtPattern matches anything shaped like a JWT (three base64url segments,
// the first being an encoded JSON object).
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

var aadstsPattern = regexp.MustCompile(`AADSTS[0-9]{1,8}`)

var oauthErrorPattern = regexp.MustCompile(`^[a-z_]{1,64}$`)

// sanitise builds a TokenError.Reason from err: the first line of its text,
// with known secrets (the current token) and anything JWT-shaped replaced,
// plus the HTTP status and Entra error codes when there is a response, cut to
// maxReasonLen bytes.
func sanitise(err error, secrets ...string) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.TrimRight(strings.TrimSpace(msg), ".")
	if errors.Is(err, context.DeadlineExceeded) && !strings.Contains(msg, "deadline") {
		msg += " (deadline exceeded)"
	}
	if resp := response(err); resp != nil {
		msg += fmt.Sprintf(": HTTP %d", resp.StatusCode)
		if codes := entraCodes(resp); codes != "" {
			msg += " " + codes
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	msg = jwtPattern.ReplaceAllString(msg, redacted)
	if msg == "" {
		msg = "unknown error"
	}
	return truncate(msg, maxReasonLen)
}

// response returns the HTTP response carried by an azidentity or azcore
// error, if any.
func response(err error) *http.Response {
	var re *redactedError
	if errors.As(err, &re) {
		err = re.err
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		return afe.RawResponse
	}
	var rse *azcore.ResponseError
	if errors.As(err, &rse) && rse.RawResponse != nil {
		return rse.RawResponse
	}
	return nil
}

// entraCodes extracts the OAuth error code and the first AADSTS code from an
// Entra error body, e.g. "(invalid_client, AADSTS7000215)". Only these
// fixed-shape codes are kept: the free text of a body is not trusted to be
// free of secrets.
func entraCodes(resp *http.Response) string {
	body, err := runtime.Payload(resp)
	if err != nil || len(body) == 0 {
		return ""
	}
	var codes []string
	var doc struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &doc) == nil {
		var code string
		if json.Unmarshal(doc.Error, &code) == nil && oauthErrorPattern.MatchString(code) {
			codes = append(codes, code)
		}
	}
	if c := aadstsPattern.Find(body); c != nil {
		codes = append(codes, string(c))
	}
	if len(codes) == 0 {
		return ""
	}
	return "(" + strings.Join(codes, ", ") + ")"
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "..."
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
