package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

type tokenKind uint8

const (
	tokLiteral tokenKind = iota
	tokVar               // a policy variable, matched literally once substituted
	tokStar              // * : any run of characters, '/' included
	tokOne               // ? : exactly one character
)

type token struct {
	kind tokenKind
	lit  string
	ref  *ref
}

// pattern is a compiled Resource, Action or condition value: literals,
// wildcards and variables. Matching never builds the substituted string: a
// variable's value is compared in place, and so matches literally even when
// it contains '*' or '?' (a client ID of "+" matches only a literal "+", as
// reference/aws-iot-core/basic-policy-variables.md warns).
type pattern struct {
	raw  string
	toks []token
	any  bool   // exactly "*": matches everything
	refs []*ref // the variables, for diagnostics and resolvability checks
}

// patternOpts says how to read a pattern's text.
type patternOpts struct {
	wildcards bool // '*' and '?' are wildcards (Resource, Action, *Like, Arn*)
	variables bool // ${...} is a variable (policy Version 2012-10-17)
	// checkVar vets a variable name at compile time; nil accepts any.
	checkVar func(name string) error
}

// compilePattern tokenizes raw. ${*}, ${?} and ${$} are the literal
// characters IAM defines for writing '*', '?' and '$' where they would
// otherwise be special (reference/aws-iot-core/iot-policy-variables.md).
func compilePattern(raw string, o patternOpts) (pattern, error) {
	p := pattern{raw: raw}
	if o.wildcards && raw == "*" {
		p.any = true
		p.toks = []token{{kind: tokStar}}
		return p, nil
	}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			p.toks = append(p.toks, token{kind: tokLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(raw); {
		ch := raw[i]
		if o.variables && ch == '$' && i+1 < len(raw) && raw[i+1] == '{' {
			if j := strings.IndexByte(raw[i+2:], '}'); j >= 0 {
				name := raw[i+2 : i+2+j]
				text := raw[i : i+3+j]
				i += 3 + j
				switch name {
				case "*", "?", "$":
					lit.WriteString(name)
					continue
				}
				if o.checkVar != nil {
					if err := o.checkVar(name); err != nil {
						return p, err
					}
				}
				r := parseRef(name, text)
				flush()
				p.toks = append(p.toks, token{kind: tokVar, ref: &r})
				p.refs = append(p.refs, &r)
				continue
			}
		}
		if o.wildcards && (ch == '*' || ch == '?') {
			flush()
			if ch == '*' {
				if n := len(p.toks); n == 0 || p.toks[n-1].kind != tokStar {
					p.toks = append(p.toks, token{kind: tokStar})
				}
			} else {
				p.toks = append(p.toks, token{kind: tokOne})
			}
			i++
			continue
		}
		lit.WriteByte(ch)
		i++
	}
	flush()
	return p, nil
}

// subject is the string a pattern is matched against, as two pieces that
// are never concatenated: typically the ARN prefix "arn:aws:iot:r:a:topic/"
// (built once per Set) and the topic the broker passes.
type subject struct{ a, b string }

func (s *subject) len() int { return len(s.a) + len(s.b) }

// runeLen is the length of the character at i, so that '?' matches one
// character of a UTF-8 topic, not one byte.
func (s *subject) runeLen(i int) int {
	var c byte
	var rest string
	if i < len(s.a) {
		c, rest = s.a[i], s.a[i:]
	} else {
		c, rest = s.b[i-len(s.a)], s.b[i-len(s.a):]
	}
	if c < utf8.RuneSelf {
		return 1
	}
	_, n := utf8.DecodeRuneInString(rest)
	return n
}

// indexByte is the index of the first c in s at or after i, or -1.
func (s *subject) indexByte(i int, c byte) int {
	n := len(s.a)
	if i < n {
		if j := strings.IndexByte(s.a[i:], c); j >= 0 {
			return i + j
		}
		i = n
	}
	if j := strings.IndexByte(s.b[i-n:], c); j >= 0 {
		return i + j
	}
	return -1
}

// hasAt reports whether lit occurs in s at i.
func (s *subject) hasAt(i int, lit string, fold bool) bool {
	n := len(s.a)
	end := i + len(lit)
	if end > n+len(s.b) {
		return false
	}
	if i >= n {
		return equal(s.b[i-n:end-n], lit, fold)
	}
	if end <= n {
		return equal(s.a[i:end], lit, fold)
	}
	k := n - i
	return equal(s.a[i:], lit[:k], fold) && equal(s.b[:end-n], lit[k:], fold)
}

func equal(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// match reports whether p matches s. A variable that does not resolve makes
// the pattern match nothing. fold makes literal and variable comparisons
// case-insensitive (actions, StringEqualsIgnoreCase).
//
// The algorithm is the classic linear-backtracking wildcard match: only the
// most recent '*' is ever retried, which is correct for '*' and '?' globs.
func (p *pattern) match(s subject, fold bool, c *Context, e *evalEnv) bool {
	if p.any {
		return true
	}
	toks := p.toks
	n := s.len()
	ti, si := 0, 0
	starTi, starSi := -1, 0
	for {
		if ti < len(toks) {
			t := &toks[ti]
			switch t.kind {
			case tokStar:
				if ti == len(toks)-1 {
					return true
				}
				starTi, starSi = ti, si
				ti++
				continue
			case tokOne:
				if si < n {
					si += s.runeLen(si)
					ti++
					continue
				}
			case tokLiteral:
				if s.hasAt(si, t.lit, fold) {
					si += len(t.lit)
					ti++
					continue
				}
			case tokVar:
				v, ok := c.lookupVar(t.ref, e)
				if !ok {
					return false
				}
				if s.hasAt(si, v, fold) {
					si += len(v)
					ti++
					continue
				}
			}
		} else if si == n {
			return true
		}
		if starTi < 0 || starSi >= n {
			return false
		}
		starSi += s.runeLen(starSi)
		// The token after the star is never a star (they are merged) and not the end (a trailing star
		// returned above). If it is a literal, it can only match where its first byte is: jump there
		// with a memchr instead of trying every position in between.
		if next := &toks[starTi+1]; next.kind == tokLiteral && !fold {
			j := s.indexByte(starSi, next.lit[0])
			if j < 0 {
				return false
			}
			starSi = j
		}
		si = starSi
		ti = starTi + 1
	}
}

// literalMatch matches a pattern without variables against a plain string;
// it is used at compile time (actions against the known action names).
func (p *pattern) literalMatch(s string, fold bool) bool {
	return p.match(subject{b: s}, fold, &emptyContext, nil)
}

// arnPattern is an ArnEquals/ArnLike value: IAM matches each of the six
// colon-separated parts of an ARN separately, each part with its own
// wildcards, so a value that is not six parts matches nothing, except "*"
// which matches any ARN.
type arnPattern struct {
	whole pattern
	parts []pattern // 6 when the value is an ARN
}

func compileARNPattern(raw string, o patternOpts) (arnPattern, error) {
	var ap arnPattern
	var err error
	if ap.whole, err = compilePattern(raw, o); err != nil {
		return ap, err
	}
	fields := splitARN(raw, true)
	if len(fields) != 6 {
		return ap, nil
	}
	for _, f := range fields {
		p, err := compilePattern(f, o)
		if err != nil {
			return ap, err
		}
		ap.parts = append(ap.parts, p)
	}
	return ap, nil
}

func (ap *arnPattern) match(v string, c *Context, e *evalEnv) bool {
	if ap.parts == nil {
		return ap.whole.any
	}
	// Split v into its six parts without allocating.
	rest := v
	for i := 0; i < 6; i++ {
		var part string
		if i == 5 {
			part = rest
		} else {
			j := strings.IndexByte(rest, ':')
			if j < 0 {
				return false
			}
			part, rest = rest[:j], rest[j+1:]
		}
		if !ap.parts[i].match(subject{b: part}, false, c, e) {
			return false
		}
	}
	return true
}

// splitARN splits an ARN into at most six parts on ':' (the resource part
// keeps its colons); with skipVars, colons inside ${...} do not split.
func splitARN(s string, skipVars bool) []string {
	var out []string
	start := 0
	for i := 0; i < len(s) && len(out) < 5; i++ {
		if skipVars && s[i] == '$' && i+1 < len(s) && s[i+1] == '{' {
			if j := strings.IndexByte(s[i:], '}'); j >= 0 {
				i += j
				continue
			}
		}
		if s[i] == ':' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// String is the pattern as written.
func (p *pattern) String() string { return p.raw }

var _ fmt.Stringer = (*pattern)(nil)
