package auth

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// loginToPostgres logs in to the test cluster as user over TCP, driving the
// authentication exchange with SCRAMClient or MD5Response, and returns which
// method the server asked for.
func loginToPostgres(t *testing.T, user, password string) (method string, err error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", testCluster.addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": "postgres"},
	})
	if err := fe.Flush(); err != nil {
		t.Fatalf("send startup: %v", err)
	}
	var sc *SCRAMClient
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationSASL:
			method = "scram"
			sc = NewSCRAMClient(password)
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: sc.Mechanism(), Data: sc.ClientFirst()})
		case *pgproto3.AuthenticationSASLContinue:
			final, err := sc.ClientFinal(m.Data)
			if err != nil {
				return method, err
			}
			fe.Send(&pgproto3.SASLResponse{Data: final})
		case *pgproto3.AuthenticationSASLFinal:
			if err := sc.VerifyServerFinal(m.Data); err != nil {
				return method, err
			}
			continue
		case *pgproto3.AuthenticationMD5Password:
			method = "md5"
			fe.Send(&pgproto3.PasswordMessage{Password: MD5Response(user, password, m.Salt)})
		case *pgproto3.ErrorResponse:
			return method, fmt.Errorf("server error %s: %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			fe.Send(&pgproto3.Terminate{})
			_ = fe.Flush()
			return method, nil
		default:
			continue // AuthenticationOk, ParameterStatus, BackendKeyData
		}
		if err := fe.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
}

func TestSCRAMClientAndMD5ResponseLogInToRealPostgreSQL(t *testing.T) {
	testCluster.exec(t, "SET password_encryption = 'scram-sha-256'; DROP ROLE IF EXISTS login_scram; CREATE ROLE login_scram LOGIN PASSWORD 'scr@m pass'")
	testCluster.exec(t, "SET password_encryption = 'md5'; DROP ROLE IF EXISTS login_md5; CREATE ROLE login_md5 LOGIN PASSWORD 'md5 pass'")
	// A verifier built by SCRAMVerifier and installed verbatim: PostgreSQL
	// stores pre-hashed secrets as given, so logging in proves the format.
	verifier := SCRAMVerifier("built by pgferry", []byte("0123456789abcdef"), 4096)
	testCluster.exec(t, fmt.Sprintf("DROP ROLE IF EXISTS login_verifier; CREATE ROLE login_verifier LOGIN PASSWORD '%s'", verifier))
	if got := testCluster.queryString(t, "SELECT rolpassword FROM pg_authid WHERE rolname = 'login_verifier'"); got != verifier {
		t.Fatalf("PostgreSQL rewrote the verifier: got %q, want %q", got, verifier)
	}
	// A low iteration count, allowed by PostgreSQL's scram_iterations.
	testCluster.exec(t, fmt.Sprintf("DROP ROLE IF EXISTS login_lowiter; CREATE ROLE login_lowiter LOGIN PASSWORD '%s'",
		SCRAMVerifier("few iterations", []byte("salt"), 1)))

	tests := []struct {
		name, user, password, method string
		wantErr                      bool
	}{
		{"scram right password", "login_scram", "scr@m pass", "scram", false},
		{"scram wrong password", "login_scram", "nope", "scram", true},
		{"md5 right password", "login_md5", "md5 pass", "md5", false},
		{"md5 wrong password", "login_md5", "nope", "md5", true},
		{"SCRAMVerifier accepted", "login_verifier", "built by pgferry", "scram", false},
		{"SCRAMVerifier wrong password", "login_verifier", "built by someone else", "scram", true},
		{"iteration count 1", "login_lowiter", "few iterations", "scram", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, err := loginToPostgres(t, tc.user, tc.password)
			if method != tc.method {
				t.Errorf("method = %q, want %q", method, tc.method)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("login error = %v, want error: %t", err, tc.wantErr)
			}
		})
	}
}

func TestCredentialsReadFromPgAuthidVerifyLikePostgreSQL(t *testing.T) {
	testCluster.exec(t, "SET password_encryption = 'scram-sha-256'; DROP ROLE IF EXISTS authid_scram; CREATE ROLE authid_scram PASSWORD 'p1'")
	testCluster.exec(t, "SET password_encryption = 'md5'; DROP ROLE IF EXISTS authid_md5; CREATE ROLE authid_md5 PASSWORD 'p2'")
	for _, tc := range []struct {
		user, password string
		kind           CredentialKind
	}{
		{"authid_scram", "p1", KindSCRAM},
		{"authid_md5", "p2", KindMD5},
	} {
		stored := testCluster.queryString(t, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", tc.user)
		cred, err := ParseCredential(tc.user, stored)
		if err != nil {
			t.Fatalf("ParseCredential(%s): %v", tc.user, err)
		}
		if cred.Kind() != tc.kind {
			t.Errorf("%s: kind %v, want %v", tc.user, cred.Kind(), tc.kind)
		}
		if !VerifyPlain(cred, tc.password) || VerifyPlain(cred, tc.password+"x") {
			t.Errorf("%s: VerifyPlain disagrees with PostgreSQL's secret", tc.user)
		}
	}
}

func TestSCRAMClientRejectsTamperedServerFinal(t *testing.T) {
	// An in-process server that knows a different password than the client
	// cannot produce a valid v=; the client must notice.
	cred, _ := ParseCredential("u", "server secret")
	srv, err := NewSCRAMServer("u", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := NewSCRAMClient("server secret")
	sf, err := srv.Start(cl.Mechanism(), cl.ClientFirst())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := cl.ClientFinal(sf)
	if err != nil {
		t.Fatal(err)
	}
	final, err := srv.Finish(cf)
	if err != nil {
		t.Fatal(err)
	}
	final[len(final)-3] ^= 1
	if err := cl.VerifyServerFinal(final); err == nil {
		t.Fatal("tampered server signature accepted")
	}
	cl2 := NewSCRAMClient("x")
	cl2.ClientFirst()
	if _, err := cl2.ClientFinal([]byte("r=" + cl2.clientNonce + "abc,s=c2FsdA==,i=4096")); err != nil {
		t.Fatal(err)
	}
	if err := cl2.VerifyServerFinal([]byte("e=invalid-proof")); err == nil || errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("e= error: %v", err)
	}
}
