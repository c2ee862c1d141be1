package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// globRegexp is the reference meaning of a wildcard pattern: * any run of characters, ? exactly one.
func globRegexp(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for _, r := range pat {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`)$`)
	return regexp.MustCompile(b.String())
}

// FuzzPatternMatch checks the compiled matcher, which matches a subject in two pieces without joining
// them and skips ahead after a star, against the regular-expression meaning of the same glob.
func FuzzPatternMatch(f *testing.F) {
	seeds := [][3]string{
		{"arn:aws:iot:*:*:topic/$aws/*", "arn:aws:iot:us-east-1:123456789012:", "topic/sensors/1/t"},
		{"arn:aws:iot:*:*:topic/$aws/*", "arn:aws:iot:us-east-1:123456789012:", "topic/$aws/things/x"},
		{"a*b?c*", "aXXb", "Yc"},
		{"*:*:*", "a:b", ":c"},
		{"?*?", "é", "ü"},
		{"a/+/b", "a/", "+/b"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pat, a, b string) {
		if !utf8.ValidString(pat) || !utf8.ValidString(a) || !utf8.ValidString(b) || strings.Contains(pat, "${") {
			return
		}
		p, err := compilePattern(pat, patternOpts{wildcards: true})
		if err != nil {
			return
		}
		got := p.match(subject{a: a, b: b}, false, nil, nil)
		if want := globRegexp(pat).MatchString(a + b); got != want {
			t.Fatalf("pattern %q on %q+%q: match = %v, want %v", pat, a, b, got, want)
		}
	})
}
