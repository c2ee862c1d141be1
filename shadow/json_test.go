package shadow

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestMarshalIsEncodingJSON: appendJSON writes byte for byte what encoding/json writes, for every kind
// of value and answer this package marshals (devices compare answers, and stored documents must read
// the same whichever wrote them).
func TestMarshalIsEncodingJSON(t *testing.T) {
	tok := "tok\"en"
	strs := []string{"", "plain", "<&>", "quote\" back\\ slash/", "ctl \x00\x01\b\f\n\r\t\x1f\x7f", "é ü 日本",
		"bad \xff\xfe utf8 \xc3", "sep \u2028 \u2029 end", "emoji 😀", "\ufffd"}
	vals := []any{nil, true, false, json.Number("0"), json.Number("-1.5e+10"), json.Number(""), int64(-7), 42,
		map[string]any{}, map[string]any(nil), []any{}, []any(nil), []any{json.Number("1"), nil, "x", []any{true}},
		map[string]any{"b": json.Number("1"), "a": map[string]any{"z": nil, "y": []any{map[string]any{"k": "v"}}}, "": "empty key"},
		map[string]any{"timestamp": int64(1700000000)}, 3.25, []string{"fallback"}}
	for _, s := range strs {
		vals = append(vals, s, map[string]any{s: s})
	}
	many := map[string]any{}
	for i := range 40 { // more keys than appendObject's stack array
		many[string(rune('a'+i%26))+string(rune('A'+i))] = json.Number("1")
	}
	vals = append(vals, many)
	obj := map[string]any{"c": "red", "n": map[string]any{"x": json.Number("1")}}
	meta := map[string]any{"c": leaf(5), "n": map[string]any{"x": leaf(6)}}
	docs := []*Document{{}, {Version: 3, Deleted: 9}, {Desired: obj, DesiredMeta: meta, Version: 2},
		{Desired: obj, Reported: obj, DesiredMeta: meta, ReportedMeta: meta, Version: 7}, {Desired: map[string]any{}, Version: 1}}
	for _, d := range docs {
		vals = append(vals, d, *d, snapshotOf(d))
	}
	vals = append(vals,
		response{State: obj, Metadata: meta, Version: 1, Timestamp: 2}, response{State: nil, Metadata: nil, ClientToken: &tok},
		documents{Previous: nil, Current: snapshotOf(docs[2]), Timestamp: 4}, documents{Previous: snapshotOf(docs[3]), Current: snapshotOf(docs[2]), ClientToken: &tok},
		deleteResponse{Version: 1, Timestamp: 2}, deleteResponse{ClientToken: &tok},
		errorResponse{Code: 400, Message: "Invalid <JSON>", Timestamp: 3}, errorResponse{Code: 404, Message: "No shadow exists with name: 'x'", ClientToken: &tok})
	for _, v := range vals {
		if got, want := marshal(v), stdMarshal(v); !bytes.Equal(got, want) {
			t.Errorf("%#v:\n got %s\nwant %s", v, got, want)
		}
	}
	for _, d := range docs {
		if got, want := stateSize(d), stdStateSize(d); got != want {
			t.Errorf("stateSize(%s) = %d, encoding/json %d", d.encode(), got, want)
		}
	}
}

// stdStateSize is stateSize by encoding/json.
func stdStateSize(d *Document) int {
	st := map[string]any{}
	if d.Desired != nil {
		st["desired"] = d.Desired
	}
	if d.Reported != nil {
		st["reported"] = d.Reported
	}
	return len(stdMarshal(st))
}

// stdDecodeJSON is what decodeJSON was before it was written by hand: encoding/json's Decoder with
// UseNumber, refusing trailing data. decodeJSON must accept and return the same.
func stdDecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, errTrailing
	}
	return v, nil
}

// decodeCases are texts on the edges of JSON, for TestDecodeJSONIsEncodingJSON and FuzzDecodeJSON.
var decodeCases = []string{
	``, ` `, `{}`, `[]`, ` {"a" : [ 1 , -0.5e+3 , true , false , null ] } `, `{"a":1,"a":2}`, `{"a":1,}`, `[1,]`, `[,1]`,
	`{"a" 1}`, `{1:2}`, `"x"`, `123`, `-`, `-0`, `01`, `1.`, `.5`, `1e`, `1e+`, `1E-7`, `-12.34E+056`, `1e400`, `tru`, `true`,
	`nullx`, `null null`, `{"a":1}x`, `{"a":1}}`, "{\"a\":1}\n\t\r ", `"\"\\\/\b\f\n\r\t"`, `"\u00e9\u0000"`, `"\ud83d\ude00"`,
	`"\ud83d"`, `"\ud83dx"`, `"\ude00\ud83d"`, `"\ud83d\u0041"`, `"\ud83d\uZZZZ"`, `"\uD83D\uDE00"`, `"\u12"`, `"\x"`, `"\'"`,
	"\"tab\there\"", "\"nl\nhere\"", "\"bad \xff utf8\"", "\"\xed\xa0\x80\"", "\"\xc3\"", "\"é\xe2\x82\"", `"unterminated`,
	`"a\`, `["a" "b"]`, `{"a":{"b":{"c":[[[]]]}}}`, "\xef\xbb\xbf{}", `[1 2]`, `{"":""}`, `{"k":"v"`, `[`, `{`,
	strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting),
	strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1),
	strings.Repeat(`{"a":`, maxNesting) + "1" + strings.Repeat("}", maxNesting),
	strings.Repeat(`{"a":`, maxNesting+1) + "1" + strings.Repeat("}", maxNesting+1),
}

// TestDecodeJSONIsEncodingJSON: decodeJSON accepts what encoding/json accepts and returns the same
// values (json.Number text, U+FFFD for invalid UTF-8 and lone surrogates, empty non-nil objects and
// arrays, the last duplicate key).
func TestDecodeJSONIsEncodingJSON(t *testing.T) {
	for _, c := range decodeCases {
		checkDecode(t, []byte(c))
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, c := range decodeCases {
		if len(c) < 1000 {
			f.Add([]byte(c))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}

func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	got, err := decodeJSON(data)
	want, werr := stdDecodeJSON(data)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%.80q: decodeJSON error %v, encoding/json %v", data, err, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%.80q: decodeJSON %#v, encoding/json %#v", data, got, want)
	}
}
