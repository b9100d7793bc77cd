package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHealthcheckExitsZeroOnlyOn200(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok"))
		case "/readyz":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tests := []struct {
		name string
		args []string
		want int
	}{
		{"healthy", []string{srv.URL + "/healthz"}, 0},
		{"not ready", []string{srv.URL + "/readyz"}, 1},
		{"not found", []string{srv.URL + "/nope"}, 1},
		{"nothing listening", []string{closedURL + "/healthz"}, 1},
		{"timeout", []string{"-timeout", "50ms", srv.URL + "/slow"}, 1},
		{"bad flag", []string{"-nope"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args); got != tc.want {
				t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}
