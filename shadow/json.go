package shadow

import (
	"bytes"
	"encoding/json"
	"strconv"
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
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only values this package built are marshalled: maps, slices, json.Number, strings, bools.
		panic("shadow: marshal: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
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
