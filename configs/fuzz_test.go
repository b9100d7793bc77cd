package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// addSeedFiles adds the named files as fuzz seeds.
func addSeedFiles(f *testing.F, names ...string) {
	f.Helper()
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// checkRoundTrip asserts that a successfully parsed config survives
// ToTOML and Parse unchanged.
func checkRoundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := c.ToTOML()
	if err != nil {
		t.Fatalf("ToTOML: %v", err)
	}
	back, _, err := Parse(out, "toml", nil)
	if err != nil {
		t.Fatalf("Parse(ToTOML()): %v\n%s", err, out)
	}
	want := *c
	want.Included = nil // what %include read is in the TOML itself
	if !reflect.DeepEqual(back, &want) {
		t.Fatalf("round trip differs\n got %+v\nwant %+v\n%s", back, &want, out)
	}
}

// FuzzParseTOML checks that no TOML input panics the decoder, defaults,
// environment handling or validation, and that accepted input round-trips.
func FuzzParseTOML(f *testing.F) {
	addSeedFiles(f, "pgferry.toml", filepath.Join("testdata", "entra.toml"), filepath.Join("testdata", "replicas.toml"))
	f.Add([]byte(minimalTOML + appDB))
	f.Add([]byte(minimalTOML + "query_wait_timeout = 1e308\n" + appDB + "port = 99999\n"))
	f.Add([]byte("[databases.\"*\"]\nhost = \"h\"\nreadonly_alias = \"*\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(data, "toml", envMap(map[string]string{"PGFERRY_MAX_CLIENT_CONN": "5"}))
		if err != nil {
			return
		}
		checkRoundTrip(t, c)
	})
}

// FuzzParseINI checks that no pgbouncer.ini input panics the ini reader and
// that accepted input converts to TOML that reads back equal.
func FuzzParseINI(f *testing.F) {
	addSeedFiles(f, filepath.Join("testdata", "pgbouncer.ini"))
	f.Add([]byte("[pgbouncer]\nauth_type = trust\n" + iniDB))
	f.Add([]byte("[databases]\n\"q\"\"d\" = host='a b' password='x''y\\z'\n[users]\nu = pool_mode=session\n"))
	f.Add([]byte("[pgbouncer]\nlisten_addr = ,*,\nserver_lifetime = -0.5\n%include x\n[databases]\n* = host=h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(data, "ini", nil)
		if err != nil {
			return
		}
		checkRoundTrip(t, c)
	})
}
