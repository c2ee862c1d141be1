package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// durationType is the type every duration key decodes into.
var durationType = reflect.TypeOf(time.Duration(0))

// minDurationTag names a field's smallest accepted value: `minDuration:"100ms"`. A field without it
// still refuses negative values and anything between zero and minAnyDuration.
const minDurationTag = "minDuration"

// minAnyDuration is the floor of every non-zero duration key: nothing ggbroker or a service waits for
// is shorter than a millisecond, so a smaller value is a unit mistake ("10ns" for "10s"), not a choice.
const minAnyDuration = time.Millisecond

// durationHook decodes duration keys. A duration is written with its unit ("10s", "500ms", "2m"), the
// way the embedded defaults write them. A bare number is refused instead of being read as nanoseconds
// (which is what mapstructure's weak typing would do: `tlsHandshakeTimeout: 10` became 10 ns and every
// TLS handshake then timed out); 0 alone is unambiguous and accepted. mapstructure names the key in the
// error.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		s := strings.TrimSpace(data.(string))
		if s == "" || s == "0" {
			return time.Duration(0), nil
		}
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			return nil, bareNumber(s)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration: write it with its unit, such as \"10s\", \"500ms\" or \"2m\"", s)
		}
		return d, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		if from == durationType {
			return data, nil // already a duration (a Go default handed to Decode)
		}
		v := reflect.ValueOf(data)
		if v.IsZero() {
			return time.Duration(0), nil
		}
		return nil, bareNumber(fmt.Sprint(data))
	}
	return data, nil
}

func bareNumber(s string) error {
	return fmt.Errorf("%s is a bare number, which would be read as nanoseconds: write the unit, such as \"%ss\" for %s seconds or \"%sms\" for milliseconds", s, s, s, s)
}

// checkDurations walks a decoded configuration value and refuses every duration field below its
// minimum (the field's minDuration tag, or minAnyDuration for a non-zero value) or negative, naming
// the key as the config file spells it (prefix + the mapstructure tags).
func checkDurations(prefix string, v reflect.Value) []error {
	var errs []error
	walkDurations(prefix, v, reflect.StructField{}, &errs)
	return errs
}

func walkDurations(key string, v reflect.Value, field reflect.StructField, errs *[]error) {
	switch {
	case v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface:
		if !v.IsNil() {
			walkDurations(key, v.Elem(), field, errs)
		}
	case v.Type() == durationType:
		if err := checkDuration(time.Duration(v.Int()), field); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", key, err))
		}
	case v.Kind() == reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "-" || strings.Contains(opts, "remain") {
				continue
			}
			if name == "" {
				name = f.Name
			}
			sub := key
			if !strings.Contains(opts, "squash") {
				sub = joinKey(key, name)
			}
			walkDurations(sub, v.Field(i), f, errs)
		}
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
		for i := range v.Len() {
			walkDurations(fmt.Sprintf("%s[%d]", key, i), v.Index(i), field, errs)
		}
	case v.Kind() == reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			walkDurations(joinKey(key, fmt.Sprint(iter.Key().Interface())), iter.Value(), field, errs)
		}
	}
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// checkDuration applies a field's minimum. A field with a minDuration tag refuses anything below it,
// zero included; other fields accept zero (conventionally "off") and refuse negative values and
// non-zero values below minAnyDuration.
func checkDuration(d time.Duration, field reflect.StructField) error {
	if tag := field.Tag.Get(minDurationTag); tag != "" {
		minimum, err := time.ParseDuration(tag)
		if err != nil {
			return fmt.Errorf("bad %s tag %q: %w", minDurationTag, tag, err) // a programming error, said plainly
		}
		if d < minimum {
			return fmt.Errorf("%s is below the minimum %s", d, minimum)
		}
		return nil
	}
	switch {
	case d < 0:
		return fmt.Errorf("%s is negative", d)
	case d > 0 && d < minAnyDuration:
		return fmt.Errorf("%s is below %s: a unit mistake? (write \"10s\", not \"10ns\")", d, minAnyDuration)
	}
	return nil
}
