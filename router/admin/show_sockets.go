// SHOW CLIENTS and SHOW SERVERS: PgBouncer's socket lists.

package admin

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// pgTime formats a time as PgBouncer's console does.
func pgTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 MST")
}

func splitAddr(a string) (string, int) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "unix", 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}

func addrOf(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	return splitAddr(a.String())
}

// Pointers in SHOW CLIENTS/SERVERS (ptr, link) are identifiers that join
// the two lists, like PgBouncer's object addresses.
func clientPtr(id uint64) string { return fmt.Sprintf("0x%x", id) }
func serverPtr(id uint64) string { return fmt.Sprintf("0x%x", 1<<40|id) }

// replicationNone is every row's replication (PgBouncer 1.23+): pgferry
// refuses replication connections, so it has none, of clients or servers.
const replicationNone = "none"

func (c *Console) showClients(rs *resultSet) {
	rs.cols = socketCols
	for _, cl := range c.b.Clients() {
		// PgBouncer 1.21+'s states (admin.c socket_row): a logged-in
		// client holding no server is "idle", one holding one "active"
		// (1.18 said "active" for both).
		state, link := "idle", ""
		switch {
		case cl.Login:
			// Still logging in: PgBouncer lists such a client only in
			// SHOW SOCKETS (cl_login), which pgferry does not answer;
			// here its ptr is one KILL_CLIENT takes.
			state = "login"
		case cl.Waiting:
			state = "waiting"
		case cl.Linked:
			state, link = "active", serverPtr(cl.Server)
		}
		addr, port := splitAddr(cl.Addr)
		laddr, lport := addrOf(cl.LocalAddr)
		rs.add("C", cl.User, cl.Database, replicationNone, state, addr, port, laddr, lport,
			pgTime(cl.ConnectedAt), pgTime(cl.ConnectedAt), 0, 0, 0,
			clientPtr(cl.ID), link, 0, cl.TLS, cl.AppName, cl.PreparedStatements, cl.ID)
	}
}

// showServers lists server connections lent to clients, then those idle
// in the pools.
func (c *Console) showServers(rs *resultSet) {
	rs.cols = socketCols
	servers := c.b.Servers()
	row := func(sv ServerInfo) {
		ci := sv.Conn
		state, link, requested := "idle", "", ci.LastUsed
		if sv.Lent {
			state, link, requested = "active", clientPtr(sv.Client), ci.Created
		}
		addr, port := splitAddr(ci.Addr)
		laddr, lport := addrOf(ci.LocalAddr)
		tlsName := ""
		if ci.TLS {
			tlsName = "TLS"
		}
		rs.add("S", sv.User, sv.Database, replicationNone, state, addr, port, laddr, lport,
			pgTime(ci.Created), pgTime(requested), 0, 0, ci.CloseNeeded,
			serverPtr(ci.ID), link, ci.PID, tlsName, "", ci.PreparedStatements, ci.ID)
	}
	for _, sv := range servers {
		if sv.Lent {
			row(sv)
		}
	}
	for _, sv := range servers {
		if !sv.Lent {
			row(sv)
		}
	}
}
