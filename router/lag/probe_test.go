package lag

import (
	"encoding/binary"
	"errors"
	"testing"
)

// dataRow encodes a DataRow body; nil values are NULL.
func dataRow(vals ...*string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(*v)))
		b = append(b, *v...)
	}
	return b
}

func str(s string) *string { return &s }

func TestParseDataRowDecodesTextAndNull(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		want    []field
		wantErr bool
	}{
		{name: "values and null", body: dataRow(str("t"), nil, str("0/3000148"), str("")),
			want: []field{{text: "t"}, {null: true}, {text: "0/3000148"}, {text: ""}}},
		{name: "no columns", body: dataRow(), want: []field{}},
		{name: "empty", body: nil, wantErr: true},
		{name: "truncated value", body: dataRow(str("abc"))[:8], wantErr: true},
		{name: "too many columns claimed", body: []byte{0xFF, 0xFF, 0, 0, 0, 0}, wantErr: true},
		{name: "negative length", body: []byte{0, 1, 0xFF, 0xFF, 0xFF, 0xFE}, wantErr: true},
		{name: "trailing bytes", body: append(dataRow(str("t")), 0), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDataRow(tc.body)
			if tc.wantErr {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("got %v, %v; want a malformed error", got, err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("column %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestParseReplicaRowReadsLSNsAndAge(t *testing.T) {
	row, err := parseDataRow(dataRow(str("t"), str("0/3000148"), str("0/3000200"), str("1.500000")))
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseReplica(row)
	if err != nil {
		t.Fatal(err)
	}
	want := sample{inRecovery: true, replayLSN: 0x3000148, replayKnown: true, receiveLSN: 0x3000200, receiveKnown: true, replayAge: 1.5, ageKnown: true}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}

	row, _ = parseDataRow(dataRow(str("f"), nil, nil, nil))
	if s, err = parseReplica(row); err != nil || s != (sample{}) {
		t.Fatalf("all NULL: got %+v, %v", s, err)
	}
	for _, bad := range [][]byte{
		dataRow(nil, nil, nil, nil),
		dataRow(str("yes"), nil, nil, nil),
		dataRow(str("t"), str("nope"), nil, nil),
		dataRow(str("t"), nil, str("1"), nil),
		dataRow(str("t"), nil, nil, str("NaN?")),
	} {
		row, _ := parseDataRow(bad)
		if _, err := parseReplica(row); !errors.Is(err, errMalformed) {
			t.Errorf("parseReplica(%q) err = %v, want malformed", bad, err)
		}
	}
}

func TestParsePrimaryRowTreatsRecoveryAndNullLSNAsNotWritable(t *testing.T) {
	tests := []struct {
		name    string
		row     []byte
		want    primaryRow
		wantErr bool
	}{
		{name: "writable", row: dataRow(str("f"), str("16/B374D848")), want: primaryRow{lsn: 0x16_B374D848}},
		{name: "standby", row: dataRow(str("t"), nil), want: primaryRow{inRecovery: true}},
		{name: "promoted mid-query", row: dataRow(str("f"), nil), want: primaryRow{inRecovery: true}},
		{name: "bad lsn", row: dataRow(str("f"), str("x")), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			row, err := parseDataRow(tc.row)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parsePrimary(row)
			if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
				t.Fatalf("got %+v, %v; want %+v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseDataRow(f *testing.F) {
	f.Add(dataRow(str("t"), str("0/3000148"), nil, str("0.25")))
	f.Add(dataRow())
	f.Add([]byte{0, 1, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, body []byte) {
		row, err := parseDataRow(body)
		if err != nil {
			return
		}
		// A parsed row re-encodes to the same bytes.
		vals := make([]*string, len(row))
		for i := range row {
			if !row[i].null {
				vals[i] = &row[i].text
			}
		}
		if got := dataRow(vals...); string(got) != string(body) {
			t.Fatalf("re-encoded %x, want %x", got, body)
		}
		if len(row) == 4 {
			_, _ = parseReplica(row)
		}
		if len(row) == 2 {
			_, _ = parsePrimary(row)
		}
	})
}
