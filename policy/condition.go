package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// opFamily is a condition operator without its Not, IfExists and set
// qualifiers.
type opFamily uint8

const (
	opStringEquals opFamily = iota
	opStringLike
	opNumericEquals
	opNumericLessThan
	opNumericLessThanEquals
	opNumericGreaterThan
	opNumericGreaterThanEquals
	opDateEquals
	opDateLessThan
	opDateLessThanEquals
	opDateGreaterThan
	opDateGreaterThanEquals
	opBool
	opIPAddress
	opArnLike
	opBinaryEquals
	opNull
)

type setQualifier uint8

const (
	setNone setQualifier = iota
	setAnyValue
	setAllValues
)

// operators maps an IAM condition operator name (lower case, without
// ForAnyValue:/ForAllValues: and IfExists) to its family and negation.
var operators = map[string]struct {
	fam        opFamily
	negate     bool
	ignoreCase bool
}{
	"stringequals":              {fam: opStringEquals},
	"stringnotequals":           {fam: opStringEquals, negate: true},
	"stringequalsignorecase":    {fam: opStringEquals, ignoreCase: true},
	"stringnotequalsignorecase": {fam: opStringEquals, negate: true, ignoreCase: true},
	"stringlike":                {fam: opStringLike},
	"stringnotlike":             {fam: opStringLike, negate: true},
	"numericequals":             {fam: opNumericEquals},
	"numericnotequals":          {fam: opNumericEquals, negate: true},
	"numericlessthan":           {fam: opNumericLessThan},
	"numericlessthanequals":     {fam: opNumericLessThanEquals},
	"numericgreaterthan":        {fam: opNumericGreaterThan},
	"numericgreaterthanequals":  {fam: opNumericGreaterThanEquals},
	"dateequals":                {fam: opDateEquals},
	"datenotequals":             {fam: opDateEquals, negate: true},
	"datelessthan":              {fam: opDateLessThan},
	"datelessthanequals":        {fam: opDateLessThanEquals},
	"dategreaterthan":           {fam: opDateGreaterThan},
	"dategreaterthanequals":     {fam: opDateGreaterThanEquals},
	"bool":                      {fam: opBool},
	"ipaddress":                 {fam: opIPAddress},
	"notipaddress":              {fam: opIPAddress, negate: true},
	// IAM: ArnEquals and ArnLike behave the same, part by part with wildcards.
	"arnequals":    {fam: opArnLike},
	"arnlike":      {fam: opArnLike},
	"arnnotequals": {fam: opArnLike, negate: true},
	"arnnotlike":   {fam: opArnLike, negate: true},
	"binaryequals": {fam: opBinaryEquals},
	"null":         {fam: opNull},
}

// condition is one key under one operator: "StringEquals": {"key": [...]}.
type condition struct {
	opName     string // as written, for diagnostics
	fam        opFamily
	negate     bool
	ignoreCase bool
	ifExists   bool
	set        setQualifier
	key        ref

	strs  []pattern // string and binary values
	arns  []arnPattern
	nums  []float64
	times []time.Time
	nets  []netip.Prefix
	bools []bool // Bool values; for Null, whether the key must be absent
	refs  []*ref // variables in the values
}

// compileCondition compiles one operator/key pair. The values have been
// turned into strings (JSON numbers and booleans keep their text).
func compileCondition(opName, key string, values []string, vars bool) (condition, error) {
	cd := condition{opName: opName, key: parseRef(key, key)}
	op := strings.ToLower(opName)
	switch {
	case strings.HasPrefix(op, "foranyvalue:"):
		cd.set, op = setAnyValue, op[len("foranyvalue:"):]
	case strings.HasPrefix(op, "forallvalues:"):
		cd.set, op = setAllValues, op[len("forallvalues:"):]
	}
	if strings.HasSuffix(op, "ifexists") && op != "null" {
		cd.ifExists, op = true, strings.TrimSuffix(op, "ifexists")
	}
	def, ok := operators[op]
	if !ok || (def.fam == opNull && (cd.ifExists || cd.set != setNone)) {
		return cd, fmt.Errorf("unknown condition operator %q", opName)
	}
	cd.fam, cd.negate, cd.ignoreCase = def.fam, def.negate, def.ignoreCase
	for _, v := range values {
		switch cd.fam {
		case opStringEquals, opBinaryEquals, opStringLike:
			p, err := compilePattern(v, patternOpts{wildcards: cd.fam == opStringLike, variables: vars})
			if err != nil {
				return cd, err
			}
			cd.strs = append(cd.strs, p)
			cd.refs = append(cd.refs, p.refs...)
		case opArnLike:
			p, err := compileARNPattern(v, patternOpts{wildcards: true, variables: vars})
			if err != nil {
				return cd, err
			}
			cd.arns = append(cd.arns, p)
			cd.refs = append(cd.refs, p.whole.refs...)
		case opNumericEquals, opNumericLessThan, opNumericLessThanEquals, opNumericGreaterThan, opNumericGreaterThanEquals:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return cd, fmt.Errorf("%s: %q is not a number", opName, v)
			}
			cd.nums = append(cd.nums, f)
		case opDateEquals, opDateLessThan, opDateLessThanEquals, opDateGreaterThan, opDateGreaterThanEquals:
			t, ok := parseDate(v)
			if !ok {
				return cd, fmt.Errorf("%s: %q is not a date (ISO 8601 or epoch seconds)", opName, v)
			}
			cd.times = append(cd.times, t)
		case opBool, opNull:
			b, ok := parseBool(v)
			if !ok {
				return cd, fmt.Errorf("%s: %q is not true or false", opName, v)
			}
			cd.bools = append(cd.bools, b)
		case opIPAddress:
			pfx, err := parsePrefix(v)
			if err != nil {
				return cd, fmt.Errorf("%s: %q is not an IP address or CIDR block", opName, v)
			}
			cd.nets = append(cd.nets, pfx)
		}
	}
	return cd, nil
}

func parsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var dateLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02",
}

// parseDate reads the date forms IAM accepts: ISO 8601 and epoch seconds.
func parseDate(v string) (time.Time, bool) {
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t, true
		}
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0), true
	}
	return time.Time{}, false
}

// eval applies IAM's rules for absent keys and set operators:
//   - a key that is absent fails a positive operator and satisfies a
//     negated one; ...IfExists makes an absent key satisfy any operator;
//   - ForAllValues: true when every request value matches (so when the key
//     is absent or empty); ForAnyValue: true when at least one does (so
//     false when absent). reference/aws-iot-core/connect-policy.md relies
//     on both with iot:ConnectAttributes.
func (cd *condition) eval(c *Context, e *evalEnv) bool {
	if cd.fam == opNull {
		present := c.present(&cd.key, e)
		for _, wantAbsent := range cd.bools {
			if wantAbsent != present {
				return true
			}
		}
		return false
	}
	if cd.key.multi() {
		vs, present := c.values(&cd.key)
		switch cd.set {
		case setAllValues:
			for _, v := range vs {
				if !cd.matchOne(v, c, e) {
					return false
				}
			}
			return true
		case setAnyValue:
			for _, v := range vs {
				if cd.matchOne(v, c, e) {
					return true
				}
			}
			return false
		}
		if !present {
			return cd.ifExists || cd.negate
		}
		// A plain operator on a list key: a positive operator needs one
		// value to match, a negated one needs every value to pass.
		for _, v := range vs {
			if cd.matchOne(v, c, e) != cd.negate {
				return !cd.negate
			}
		}
		return cd.negate
	}
	v, present := c.lookup(&cd.key, e)
	if !present {
		switch cd.set {
		case setAllValues:
			return true
		case setAnyValue:
			return false
		}
		return cd.ifExists || cd.negate
	}
	return cd.matchOne(v, c, e)
}

// matchOne applies the operator to one request value: positive operators
// need the value to match one of the policy's values, negated ones need it
// to match none.
func (cd *condition) matchOne(v string, c *Context, e *evalEnv) bool {
	return cd.matchAny(v, c, e) != cd.negate
}

func (cd *condition) matchAny(v string, c *Context, e *evalEnv) bool {
	switch cd.fam {
	case opStringEquals, opBinaryEquals, opStringLike:
		for i := range cd.strs {
			if cd.strs[i].match(subject{b: v}, cd.ignoreCase, c, e) {
				return true
			}
		}
	case opArnLike:
		for i := range cd.arns {
			if cd.arns[i].match(v, c, e) {
				return true
			}
		}
	case opNumericEquals, opNumericLessThan, opNumericLessThanEquals, opNumericGreaterThan, opNumericGreaterThanEquals:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return false
		}
		for _, n := range cd.nums {
			if compare(cd.fam-opNumericEquals, cmpFloat(f, n)) {
				return true
			}
		}
	case opDateEquals, opDateLessThan, opDateLessThanEquals, opDateGreaterThan, opDateGreaterThanEquals:
		var t time.Time
		if cd.key.id == keyCurrentTime || cd.key.id == keyEpochTime {
			t = e.time()
		} else {
			var ok bool
			if t, ok = parseDate(v); !ok {
				return false
			}
		}
		for _, d := range cd.times {
			if compare(cd.fam-opDateEquals, t.Compare(d)) {
				return true
			}
		}
	case opBool:
		b, ok := parseBool(v)
		if !ok {
			return false
		}
		for _, want := range cd.bools {
			if b == want {
				return true
			}
		}
	case opIPAddress:
		var a netip.Addr
		if cd.key.id == keySourceIP {
			a = c.SourceIP.Unmap()
		} else {
			var err error
			if a, err = netip.ParseAddr(v); err != nil {
				return false
			}
			a = a.Unmap()
		}
		for _, p := range cd.nets {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// compare applies a relation (0 equals, 1 less than, 2 less than or equal,
// 3 greater than, 4 greater than or equal: the order of the op constants)
// to the result of a three-way comparison.
func compare(rel opFamily, cmp int) bool {
	switch rel {
	case 0:
		return cmp == 0
	case 1:
		return cmp < 0
	case 2:
		return cmp <= 0
	case 3:
		return cmp > 0
	default:
		return cmp >= 0
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseBool reads "true" or "false" in any case, the only values IAM's Bool
// operator knows.
func parseBool(v string) (b, ok bool) {
	switch {
	case strings.EqualFold(v, "true"):
		return true, true
	case strings.EqualFold(v, "false"):
		return false, true
	}
	return false, false
}
