package shadow

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// JSON values in this package are what encoding/json decodes with UseNumber: map[string]any, []any,
// json.Number, string, bool and nil. Numbers stay json.Number so that a value is written back as it was
// sent (1.0 stays 1.0) and compared by value (1 equals 1.0, services/shadow.md §4). Maps are never
// mutated once built: a merge makes new maps along the paths it changes and shares the rest, so a
// stored document can be read while the next one is built from it.

// decodeJSON parses one JSON value and refuses trailing data.
func decodeJSON(data []byte) (any, error) {
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

type jsonError string

func (e jsonError) Error() string { return string(e) }

const errTrailing = jsonError("trailing data after the JSON value")

// marshal writes v compactly without HTML escaping (AWS writes "<" as is), without a trailing newline.
// It writes exactly what encoding/json would (keys sorted, the same string escapes): the values and
// answers of this package are written by appendJSON, which does without reflection, the cost that
// made encoding/json a fifth of a shadow update's CPU; anything else goes to encoding/json.
func marshal(v any) []byte { return appendJSON(nil, v) }

// stdMarshal is encoding/json's form of v (the fallback of appendJSON, and its reference in tests).
func stdMarshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only values this package built are marshalled: maps, slices, json.Number, strings, bools.
		panic("shadow: marshal: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// appendJSON appends v as marshal writes it.
func appendJSON(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, x)
	case string:
		return appendString(dst, x)
	case json.Number:
		if x == "" {
			return append(dst, '0') // as encoding/json writes the zero Number
		}
		return append(dst, x...)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	case map[string]any:
		return appendObject(dst, x)
	case []any:
		if x == nil {
			return append(dst, "null"...)
		}
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, e)
		}
		return append(dst, ']')
	case *Document:
		if x == nil {
			return append(dst, "null"...)
		}
		return x.appendJSON(dst)
	case Document:
		return x.appendJSON(dst)
	case response:
		return x.appendJSON(dst)
	case snapshot:
		return x.appendJSON(dst)
	case documents:
		return x.appendJSON(dst)
	case deleteResponse:
		dst = append(dst, `{"version":`...)
		dst = strconv.AppendInt(dst, x.Version, 10)
		dst = append(dst, `,"timestamp":`...)
		dst = strconv.AppendInt(dst, x.Timestamp, 10)
		dst = appendToken(dst, x.ClientToken)
		return append(dst, '}')
	case errorResponse:
		dst = append(dst, `{"code":`...)
		dst = strconv.AppendInt(dst, int64(x.Code), 10)
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, x.Message)
		dst = append(dst, `,"timestamp":`...)
		dst = strconv.AppendInt(dst, x.Timestamp, 10)
		dst = appendToken(dst, x.ClientToken)
		return append(dst, '}')
	}
	return append(dst, stdMarshal(v)...)
}

// appendObject writes an object with its keys in order, as encoding/json sorts them.
func appendObject(dst []byte, m map[string]any) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendJSON(dst, m[k])
	}
	return append(dst, '}')
}

// appendToken writes the optional clientToken member (omitempty).
func appendToken(dst []byte, tok *string) []byte {
	if tok == nil {
		return dst
	}
	dst = append(dst, `,"clientToken":`...)
	return appendString(dst, *tok)
}

// appendMember writes a map member that encoding/json's omitempty leaves out when the map is empty.
func appendMember(dst []byte, first bool, name string, m map[string]any) ([]byte, bool) {
	if len(m) == 0 {
		return dst, first
	}
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	return appendObject(dst, m), false
}

func (d *Document) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	first := true
	dst, first = appendMember(dst, first, "desired", d.Desired)
	dst, first = appendMember(dst, first, "reported", d.Reported)
	dst, first = appendMember(dst, first, "desiredMeta", d.DesiredMeta)
	dst, first = appendMember(dst, first, "reportedMeta", d.ReportedMeta)
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, `"version":`...)
	dst = strconv.AppendInt(dst, d.Version, 10)
	if d.Deleted != 0 {
		dst = append(dst, `,"deleted":`...)
		dst = strconv.AppendInt(dst, d.Deleted, 10)
	}
	return append(dst, '}')
}

func (r response) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"state":`...)
	dst = appendJSON(dst, r.State)
	dst = append(dst, `,"metadata":`...)
	dst = appendObject(dst, r.Metadata)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, r.Version, 10)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, r.Timestamp, 10)
	dst = appendToken(dst, r.ClientToken)
	return append(dst, '}')
}

func (s snapshot) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"state":`...)
	dst = appendObject(dst, s.State)
	dst = append(dst, `,"metadata":`...)
	dst = appendObject(dst, s.Metadata)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, s.Version, 10)
	return append(dst, '}')
}

func (d documents) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"previous":`...)
	dst = appendJSON(dst, d.Previous)
	dst = append(dst, `,"current":`...)
	dst = d.Current.appendJSON(dst)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, d.Timestamp, 10)
	dst = appendToken(dst, d.ClientToken)
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as encoding/json does without HTML escaping: '"', '\\' and control characters
// escaped (\b \f \n \r \t short), invalid UTF-8 as \ufffd, U+2028 and U+2029 as \u2028 and \u2029.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// equalJSON compares two values as JSON values: numbers by value, objects by their keys, arrays element
// by element.
func equalJSON(a, b any) bool {
	switch av := a.(type) {
	case nil:
		return b == nil
	case bool:
		bv, ok := b.(bool)
		return ok && av == bv
	case string:
		bv, ok := b.(string)
		return ok && av == bv
	case json.Number:
		bv, ok := b.(json.Number)
		return ok && equalNumbers(av, bv)
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !equalJSON(av[i], bv[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, x := range av {
			y, ok := bv[k]
			if !ok || !equalJSON(x, y) {
				return false
			}
		}
		return true
	}
	return false
}

// equalNumbers compares two JSON numbers by value: exactly when both are integers, else as float64
// (the Greengrass shadow manager compares as long and as double, services/shadow.md §4).
func equalNumbers(a, b json.Number) bool {
	if a == b {
		return true
	}
	ai, aerr := strconv.ParseInt(string(a), 10, 64)
	bi, berr := strconv.ParseInt(string(b), 10, 64)
	if aerr == nil && berr == nil {
		return ai == bi
	}
	af, aerr := strconv.ParseFloat(string(a), 64)
	bf, berr := strconv.ParseFloat(string(b), 64)
	if aerr != nil || berr != nil {
		return false // out of float64's range: only the same text is equal
	}
	return af == bf
}

// depth is the nesting depth of v as AWS counts it: each object or array is one level, scalars none
// (services/shadow.md §7, SM JsonUtil.calculateDepth). It stops counting past limit.
func depth(v any, limit int) int {
	var children []any
	switch x := v.(type) {
	case map[string]any:
		for _, c := range x {
			children = append(children, c)
		}
	case []any:
		children = x
	default:
		return 0
	}
	if limit <= 0 {
		return 1
	}
	most := 0
	for _, c := range children {
		if d := depth(c, limit-1); d > most {
			most = d
			if most >= limit {
				break
			}
		}
	}
	return 1 + most
}

// nullInArray reports whether an array anywhere in v has a null element, which AWS rejects
// (aws-iot-core/device-shadow-document.md, "Array values").
func nullInArray(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		for _, c := range x {
			if nullInArray(c) {
				return true
			}
		}
	case []any:
		for _, c := range x {
			if c == nil || nullInArray(c) {
				return true
			}
		}
	}
	return false
}
