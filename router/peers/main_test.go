package peers_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Forward starts a goroutine per peer; none may outlive it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
