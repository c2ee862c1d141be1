package advisor

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"
)

// Config is a test case's configuration: the suite's, the group's and the case's blocks merged in
// that order (DA-FLOW), with Device Advisor's key names. Values are what JSON decoding gives:
// Device Advisor's examples write numbers both as strings ("300") and as numbers.
type Config map[string]any

func merge(blocks ...Config) Config {
	out := Config{}
	for _, b := range blocks {
		maps.Copy(out, b)
	}
	return out
}

// String returns a string value; a number is formatted.
func (c Config) String(key string) (string, bool, error) {
	v, ok := c[key]
	if !ok || v == nil {
		return "", false, nil
	}
	switch x := v.(type) {
	case string:
		return x, true, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true, nil
	case json.Number:
		return x.String(), true, nil
	case int, int64, int32, uint, uint64, uint32, float32:
		return fmt.Sprint(x), true, nil
	}
	return "", true, fmt.Errorf("%s: want a string, got %T", key, v)
}

// Number returns a numeric value given as a number or a numeric string.
func (c Config) Number(key string) (float64, bool, error) {
	s, ok, err := c.String(key)
	if !ok || err != nil {
		return 0, ok, err
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, true, fmt.Errorf("%s: %q is not a number", key, s)
	}
	return f, true, nil
}

// Seconds returns a duration given in seconds.
func (c Config) Seconds(key string) (time.Duration, bool, error) {
	f, ok, err := c.Number(key)
	if !ok || err != nil {
		return 0, ok, err
	}
	if f <= 0 {
		return 0, true, fmt.Errorf("%s: %v is not a positive number of seconds", key, f)
	}
	return time.Duration(f * float64(time.Second)), true, nil
}

// Strings returns a list of strings (a JSON array, or one string).
func (c Config) Strings(key string) ([]string, bool, error) {
	v, ok := c[key]
	if !ok || v == nil {
		return nil, false, nil
	}
	switch x := v.(type) {
	case string:
		return []string{x}, true, nil
	case []any:
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, isStr := e.(string)
			if !isStr {
				return nil, true, fmt.Errorf("%s[%d]: want a string, got %T", key, i, e)
			}
			out = append(out, s)
		}
		return out, true, nil
	}
	return nil, true, fmt.Errorf("%s: want a list of strings, got %T", key, v)
}

// Object returns a JSON object given as an object or as a string holding one.
func (c Config) Object(key string) (map[string]any, bool, error) {
	v, ok := c[key]
	if !ok || v == nil {
		return nil, false, nil
	}
	switch x := v.(type) {
	case map[string]any:
		return x, true, nil
	case string:
		var m map[string]any
		if err := json.Unmarshal([]byte(x), &m); err != nil {
			return nil, true, fmt.Errorf("%s: not a JSON object: %v", key, err)
		}
		return m, true, nil
	}
	return nil, true, fmt.Errorf("%s: want a JSON object, got %T", key, v)
}
