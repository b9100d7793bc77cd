package router

import (
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// startAdmin admits a client to the admin console.
func (ss *session) startAdmin(cfg *configs.Config) error {
	return protocol.Fatal(protocol.SQLStateFeatureNotSupported, "the admin console is not available yet")
}
