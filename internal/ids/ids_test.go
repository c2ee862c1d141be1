package ids

import (
	"regexp"
	"testing"
)

func TestForms(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	if a, b := TraceID(), TraceID(); !uuid.MatchString(a) || a == b {
		t.Fatalf("TraceID: %q, %q", a, b)
	}
	if h := Hex16(); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(h) {
		t.Fatalf("Hex16: %q", h)
	}
}
