package provisioning

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// The fleet provisioning topics take a payload format, json or cbor (FP-API); the embedded C SDK's
// fleet provisioning demos speak CBOR. This is the small subset of CBOR (RFC 8949) those payloads
// need: maps, arrays, text and byte strings, integers, floats, booleans and null, definite lengths
// (indefinite ones are refused with an error), tags skipped.

// maxCBORDepth bounds nesting, so a hostile payload cannot exhaust the stack.
const maxCBORDepth = 32

// DecodeCBOR decodes one CBOR data item into JSON-like Go values: map[string]any, []any, string,
// float64, bool, nil (byte strings become strings).
func DecodeCBOR(b []byte) (any, error) {
	d := &cborDecoder{b: b}
	v, err := d.item(0)
	if err != nil {
		return nil, err
	}
	if d.i != len(d.b) {
		return nil, fmt.Errorf("cbor: %d bytes after the data item", len(d.b)-d.i)
	}
	return v, nil
}

type cborDecoder struct {
	b []byte
	i int
}

var errCBORShort = errors.New("cbor: truncated data item")

func (d *cborDecoder) arg(info byte) (uint64, error) {
	switch {
	case info < 24:
		return uint64(info), nil
	case info <= 27:
		n := 1 << (info - 24)
		if d.i+n > len(d.b) {
			return 0, errCBORShort
		}
		var v uint64
		for _, c := range d.b[d.i : d.i+n] {
			v = v<<8 | uint64(c)
		}
		d.i += n
		return v, nil
	}
	return 0, fmt.Errorf("cbor: indefinite lengths and reserved additional info %d are not supported", info)
}

func (d *cborDecoder) item(depth int) (any, error) {
	if depth > maxCBORDepth {
		return nil, errors.New("cbor: nested too deep")
	}
	if d.i >= len(d.b) {
		return nil, errCBORShort
	}
	head := d.b[d.i]
	d.i++
	major, info := head>>5, head&0x1f
	if major == 7 {
		switch info {
		case 20:
			return false, nil
		case 21:
			return true, nil
		case 22, 23:
			return nil, nil
		case 25, 26, 27:
			n := 1 << (info - 24)
			if d.i+n > len(d.b) {
				return nil, errCBORShort
			}
			raw := d.b[d.i : d.i+n]
			d.i += n
			switch n {
			case 2:
				return halfToFloat(binary.BigEndian.Uint16(raw)), nil
			case 4:
				return float64(math.Float32frombits(binary.BigEndian.Uint32(raw))), nil
			default:
				return math.Float64frombits(binary.BigEndian.Uint64(raw)), nil
			}
		}
		return nil, fmt.Errorf("cbor: simple value %d is not supported", info)
	}
	n, err := d.arg(info)
	if err != nil {
		return nil, err
	}
	switch major {
	case 0:
		return float64(n), nil
	case 1:
		return -1 - float64(n), nil
	case 2, 3:
		if n > uint64(len(d.b)-d.i) {
			return nil, errCBORShort
		}
		s := string(d.b[d.i : d.i+int(n)])
		d.i += int(n)
		return s, nil
	case 4:
		if n > uint64(len(d.b)-d.i) {
			return nil, errCBORShort
		}
		out := make([]any, 0, n)
		for range n {
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case 5:
		if n > uint64(len(d.b)-d.i) {
			return nil, errCBORShort
		}
		out := make(map[string]any, n)
		for range n {
			k, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("cbor: map key %v is not a string", k)
			}
			if out[ks], err = d.item(depth + 1); err != nil {
				return nil, err
			}
		}
		return out, nil
	default: // 6: a tag; its content is the value
		return d.item(depth + 1)
	}
}

func halfToFloat(h uint16) float64 {
	exp, frac := int(h>>10&0x1f), float64(h&0x3ff)
	var v float64
	switch exp {
	case 0:
		v = math.Ldexp(frac, -24)
	case 31:
		v = math.Inf(1)
		if frac != 0 {
			v = math.NaN()
		}
	default:
		v = math.Ldexp(frac+1024, exp-25)
	}
	if h&0x8000 != 0 {
		return -v
	}
	return v
}

// EncodeCBOR encodes JSON-like Go values (what json.Unmarshal into any makes, and map[string]string)
// as CBOR, map keys sorted.
func EncodeCBOR(v any) ([]byte, error) {
	var out []byte
	return appendCBOR(out, v, 0)
}

func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

func appendCBOR(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxCBORDepth {
		return nil, errors.New("cbor: nested too deep")
	}
	switch x := v.(type) {
	case nil:
		return append(b, 0xf6), nil
	case bool:
		if x {
			return append(b, 0xf5), nil
		}
		return append(b, 0xf4), nil
	case string:
		return append(appendHead(b, 3, uint64(len(x))), x...), nil
	case int:
		return appendCBOR(b, float64(x), depth)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			if x >= 0 {
				return appendHead(b, 0, uint64(x)), nil
			}
			return appendHead(b, 1, uint64(-1-x)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, 0xfb), math.Float64bits(x)), nil
	case []any:
		b = appendHead(b, 4, uint64(len(x)))
		var err error
		for _, e := range x {
			if b, err = appendCBOR(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return appendCBOR(b, m, depth)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = appendHead(b, 5, uint64(len(x)))
		var err error
		for _, k := range keys {
			b = append(appendHead(b, 3, uint64(len(k))), k...)
			if b, err = appendCBOR(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("cbor: cannot encode %T", v)
}
