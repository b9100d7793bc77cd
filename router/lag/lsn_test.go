package lag

import (
	"errors"
	"testing"
)

func TestParseLSNReadsPostgresTextForm(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "typical", in: "16/B374D848", want: 0x16_B374D848},
		{name: "zero", in: "0/0", want: 0},
		{name: "lower case", in: "a/ff", want: 0xa_000000ff},
		{name: "max", in: "FFFFFFFF/FFFFFFFF", want: ^uint64(0)},
		{name: "leading zeros", in: "00000001/00000002", want: 1<<32 | 2},
		{name: "empty", in: "", wantErr: true},
		{name: "no slash", in: "16B374D848", wantErr: true},
		{name: "empty high", in: "/1", wantErr: true},
		{name: "empty low", in: "1/", wantErr: true},
		{name: "too long", in: "123456789/0", wantErr: true},
		{name: "sign", in: "+1/0", wantErr: true},
		{name: "0x prefix", in: "0x1/0", wantErr: true},
		{name: "not hex", in: "1/G", wantErr: true},
		{name: "two slashes", in: "1/2/3", wantErr: true},
		{name: "space", in: " 1/2", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLSN(tc.in)
			if tc.wantErr {
				if !errors.Is(err, errBadLSN) {
					t.Fatalf("ParseLSN(%q) = %d, %v; want an invalid LSN error", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseLSN(%q) = %#x, %v; want %#x", tc.in, got, err, tc.want)
			}
			if back, err := ParseLSN(FormatLSN(got)); err != nil || back != got {
				t.Fatalf("round trip via %q = %#x, %v", FormatLSN(got), back, err)
			}
		})
	}
}

func TestFormatLSNPrintsLikePostgres(t *testing.T) {
	if got := FormatLSN(0x16_B374D848); got != "16/B374D848" {
		t.Fatalf("FormatLSN = %q", got)
	}
	if got := FormatLSN(0); got != "0/0" {
		t.Fatalf("FormatLSN(0) = %q", got)
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF", "1/", "x/y", "0/3000148"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseLSN(s)
		if err != nil {
			return
		}
		back, err := ParseLSN(FormatLSN(v))
		if err != nil || back != v {
			t.Fatalf("%q -> %#x -> %q -> %#x, %v", s, v, FormatLSN(v), back, err)
		}
	})
}
