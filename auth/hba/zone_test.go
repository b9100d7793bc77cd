package hba

import (
	"net/netip"
	"testing"
)

// A link-local IPv6 client's address carries its zone (the interface it
// came in on, "fe80::1%eth0"), which netip.Prefix.Contains never matches.
// PostgreSQL compares the address alone (hba.c check_ip), so the rules for
// the address must apply, reject lines first among them.
func TestAZonedIPv6ClientMatchesTheRulesForItsAddress(t *testing.T) {
	t.Parallel()
	rules := mustParse(t, `
host all all    fe80::/10  reject
host all all    all        md5
`)
	tests := []struct {
		name     string
		addr     string
		wantLine int
		want     Method
	}{
		{"a zoned link-local client meets the reject line", "fe80::1%eth0", 2, MethodReject},
		{"the same client without a zone meets it too", "fe80::1", 2, MethodReject},
		{"a zoned client outside fe80::/10 goes on to the catch-all", "2001:db8::1%eth0", 3, MethodMD5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ru, ok := rules.Match(Conn{Addr: netip.MustParseAddr(tc.addr), Database: "app", User: "app"})
			if !ok || ru.Line != tc.wantLine || ru.Method != tc.want {
				t.Fatalf("got line %d %q (ok %v), want line %d %q", ru.Line, ru.Method, ok, tc.wantLine, tc.want)
			}
		})
	}
}
