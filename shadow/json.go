package shadow

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// JSON values in this package are what encoding/json decodes with UseNumber: map[string]any, []any,
// json.Number, string, bool and nil. Numbers stay json.Number so that a value is written back as it was
// sent (1.0 stays 1.0) and compared by value (1 equals 1.0, services/shadow.md §4). Maps are never
// mutated once built: a merge makes new maps along the paths it changes and shares the rest, so a
// stored document can be read while the next one is built from it.

// decodeJSON parses one JSON value and refuses trailing data. It accepts what encoding/json's Decoder
// with UseNumber accepts and returns what it returns (FuzzDecodeJSON compares the two): numbers as
// json.Number with their text, invalid UTF-8 in strings as U+FFFD, a lone surrogate escape as U+FFFD,
// the last of duplicate keys, at most 10000 levels of nesting. Written by hand because
// encoding/json's decoder was a tenth of a shadow update's CPU, with its garbage.
func decodeJSON(data []byte) (any, error) {
	p := jsonParser{data: data}
	p.space()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.data) {
		return nil, errTrailing
	}
	return v, nil
}

// maxNesting is encoding/json's limit on nested objects and arrays.
const maxNesting = 10000

const errSyntax = jsonError("invalid JSON")

// jsonParser is decodeJSON's state: the text and the position in it.
type jsonParser struct {
	data  []byte
	i     int
	depth int
}

func (p *jsonParser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value() (any, error) {
	if p.i >= len(p.data) {
		return nil, errSyntax
	}
	switch c := p.data[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.string()
	case c == '-' || ('0' <= c && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, errSyntax
}

func (p *jsonParser) literal(word string) error {
	if len(p.data)-p.i < len(word) || string(p.data[p.i:p.i+len(word)]) != word {
		return errSyntax
	}
	p.i += len(word)
	return nil
}

func (p *jsonParser) nest() error {
	p.depth++
	if p.depth > maxNesting {
		return jsonError("exceeded max depth")
	}
	return nil
}

func (p *jsonParser) object() (any, error) {
	p.i++ // {
	if err := p.nest(); err != nil {
		return nil, err
	}
	m := map[string]any{}
	p.space()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		p.depth--
		return m, nil
	}
	for {
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return nil, errSyntax
		}
		k, err := p.string()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, errSyntax
		}
		p.i++
		p.space()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		if end, err := p.separator('}'); err != nil {
			return nil, err
		} else if end {
			return m, nil
		}
	}
}

func (p *jsonParser) array() (any, error) {
	p.i++ // [
	if err := p.nest(); err != nil {
		return nil, err
	}
	a := []any{}
	p.space()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		p.depth--
		return a, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		if end, err := p.separator(']'); err != nil {
			return nil, err
		} else if end {
			return a, nil
		}
	}
}

// separator reads what follows a member or an element: a comma (more follow) or the closing
// bracket, which ends the object or array (end).
func (p *jsonParser) separator(closing byte) (end bool, err error) {
	p.space()
	if p.i >= len(p.data) {
		return false, errSyntax
	}
	switch p.data[p.i] {
	case ',':
		p.i++
		p.space()
		return false, nil
	case closing:
		p.i++
		p.depth--
		return true, nil
	}
	return false, errSyntax
}

// number reads a number as RFC 8259 writes it and keeps its text.
func (p *jsonParser) number() (any, error) {
	d, start := p.data, p.i
	i := p.i
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	default:
		return nil, errSyntax
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return nil, errSyntax
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return nil, errSyntax
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	p.i = i
	return json.Number(d[start:i]), nil
}

// string reads a string value (p.i at its opening quote). A string with no escape and valid UTF-8,
// the usual one, is copied once.
func (p *jsonParser) string() (string, error) {
	d := p.data
	start := p.i + 1
	i := start
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			p.i = i + 1
			return string(d[start:i]), nil
		case c == '\\':
			return p.unquote(start, i)
		case c < 0x20:
			return "", errSyntax
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				return p.unquote(start, i)
			}
			i += size
		}
	}
	return "", errSyntax
}

// unquote reads the rest of a string from i, where an escape or invalid UTF-8 is, as encoding/json
// unquotes it.
func (p *jsonParser) unquote(start, i int) (string, error) {
	d := p.data
	b := make([]byte, 0, i-start+16)
	b = append(b, d[start:i]...)
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			p.i = i + 1
			return string(b), nil
		case c == '\\':
			if i+1 >= len(d) {
				return "", errSyntax
			}
			switch e := d[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r := hex4(d[i+2:])
				if r < 0 {
					return "", errSyntax
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if r2 := hex4escape(d[i:]); r2 >= 0 {
						if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
							b = utf8.AppendRune(b, dec)
							i += 6
							continue
						}
					}
					r = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, r)
				continue
			default:
				return "", errSyntax
			}
			i += 2
		case c < 0x20:
			return "", errSyntax
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(d[i:])
			b = utf8.AppendRune(b, r) // invalid UTF-8: U+FFFD for each byte
			i += size
		}
	}
	return "", errSyntax
}

// hex4 reads the four hex digits of a \u escape, -1 if they are not.
func hex4(d []byte) rune {
	if len(d) < 4 {
		return -1
	}
	var r rune
	for _, c := range d[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// hex4escape reads a \uXXXX escape at the start of d, -1 if there is none.
func hex4escape(d []byte) rune {
	if len(d) < 6 || d[0] != '\\' || d[1] != 'u' {
		return -1
	}
	return hex4(d[2:])
}

type jsonError string

func (e jsonError) Error() string { return string(e) }

const errTrailing = jsonError("trailing data after the JSON value")

// marshal writes v compactly without HTML escaping (AWS writes "<" as is), without a trailing newline.
// It writes exactly what encoding/json would (keys sorted, the same string escapes): the values and
// answers of this package are written by appendJSON, which does without reflection, the cost that
// made encoding/json a fifth of a shadow update's CPU; anything else goes to encoding/json.
//
// The buffer starts at 256 bytes, the size of a typical answer: grown from nothing, it was copied
// half a dozen times per document.
func marshal(v any) []byte { return appendJSON(make([]byte, 0, 256), v) }

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
