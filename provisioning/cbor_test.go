package provisioning

import (
	"encoding/hex"
	"reflect"
	"testing"
)

func TestCBOR(t *testing.T) {
	// RFC 8949 appendix A examples.
	decodes := []struct {
		hex  string
		want any
	}{
		{"00", 0.0}, {"1864", 100.0}, {"3903e7", -1000.0}, {"f93c00", 1.0}, {"fb3ff199999999999a", 1.1},
		{"f5", true}, {"f6", nil}, {"6449455446", "IETF"}, {"83010203", []any{1.0, 2.0, 3.0}},
		{"a26161016162820203", map[string]any{"a": 1.0, "b": []any{2.0, 3.0}}},
		{"c074323031332d30332d32315432303a30343a30305a", "2013-03-21T20:04:00Z"},
	}
	for _, tc := range decodes {
		raw, _ := hex.DecodeString(tc.hex)
		got, err := DecodeCBOR(raw)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DecodeCBOR(%s) = %#v, %v; want %#v", tc.hex, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "18", "a1", "a10101", "9f01ff", "0000", "62ff"} {
		raw, _ := hex.DecodeString(bad)
		if _, err := DecodeCBOR(raw); err == nil {
			t.Errorf("DecodeCBOR(%q) accepted", bad)
		}
	}
	in := map[string]any{"certificateOwnershipToken": "tok", "parameters": map[string]any{"SerialNumber": "s1"}, "statusCode": 400.0, "n": -2.0, "f": 0.5, "ok": true}
	raw, err := EncodeCBOR(in)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeCBOR(raw)
	if err != nil || !reflect.DeepEqual(back, in) {
		t.Fatalf("round trip: %#v %v", back, err)
	}
}

func FuzzDecodeCBOR(f *testing.F) {
	f.Add([]byte{0xa1, 0x61, 0x61, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeCBOR(b)
		if err != nil {
			return
		}
		if _, err := EncodeCBOR(v); err != nil {
			t.Fatalf("decoded %#v does not encode: %v", v, err)
		}
	})
}
