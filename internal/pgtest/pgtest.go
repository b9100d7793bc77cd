package pgtest

import "github.com/pgferry/pgferry/internal/localpg"

// Cluster is a running (or stopped) throwaway PostgreSQL cluster; see
// localpg.Cluster.
type Cluster = localpg.Cluster

// Options configures a cluster made by Start or Cluster.StartReplica.
type Options = localpg.Options

// The role and database Start creates.
const (
	AppUser     = localpg.AppUser
	AppPassword = localpg.AppPassword
	AppDatabase = localpg.AppDatabase
)

// Start initialises and starts a new cluster, copying a template initdb
// made once (Options.FromTemplate); the caller (TestMain) owns it and must
// call Stop. See localpg.Start.
func Start(opts Options) (*Cluster, error) {
	opts.FromTemplate = true
	return localpg.Start(opts)
}

// Binary returns the full path of the PostgreSQL 15 program name.
func Binary(name string) string { return localpg.Binary(name) }

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) { return localpg.FreePort() }

// FreePorts returns n distinct free loopback ports; see localpg.FreePorts.
func FreePorts(n int) ([]int, error) { return localpg.FreePorts(n) }

// FuzzWorker reports whether this test binary runs as a fuzzing worker, so
// a TestMain can skip starting a cluster. Call it after flag.Parse.
func FuzzWorker() bool { return localpg.FuzzWorker() }

// ClientCA is a certificate authority for tests of client certificate
// authentication; see localpg.ClientCA.
type ClientCA = localpg.ClientCA

// NewClientCA creates a CA whose files live in dir.
func NewClientCA(dir string) (*ClientCA, error) { return localpg.NewClientCA(dir) }
