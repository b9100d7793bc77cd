// Command pgferry-healthcheck is the container health check for pgferry's
// image: it GETs a URL (by default pgferry's liveness endpoint on the
// default metrics_listen port) and exits 0 on a 200 answer, 1 otherwise.
// The runtime image is distroless and has no shell or curl, so Docker's
// HEALTHCHECK runs this instead.
//
// Usage:
//
//	pgferry-healthcheck [-timeout 3s] [URL]
//
// URL defaults to $PGFERRY_HEALTHCHECK_URL, then to
// http://127.0.0.1:9127/healthz. Use .../readyz to also fail while
// pgferry drains on SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

const defaultURL = "http://127.0.0.1:9127/healthz"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("pgferry-healthcheck", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	url := os.Getenv("PGFERRY_HEALTHCHECK_URL")
	if fs.NArg() > 0 {
		url = fs.Arg(0)
	}
	if url == "" {
		url = defaultURL
	}
	if err := check(url, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "pgferry-healthcheck:", err)
		return 1
	}
	return 0
}

func check(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// Talk to pgferry directly, never through an environment proxy.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
