package iotapi

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPaginate(t *testing.T) {
	first, err := paginate(httptest.NewRequest("GET", "/things?maxResults=3", nil), 7, "nextToken", "maxResults", 50, 250)
	if err != nil || first.start != 0 || first.end != 3 || first.next == "" {
		t.Fatalf("first page: %+v %v", first, err)
	}
	last, err := paginate(httptest.NewRequest("GET", "/things?maxResults=5&nextToken="+first.next, nil), 7, "nextToken", "maxResults", 50, 250)
	if err != nil || last.start != 3 || last.end != 7 || last.next != "" {
		t.Fatalf("last page: %+v %v", last, err)
	}
	for _, q := range []string{"maxResults=0", "maxResults=251", "maxResults=x", "nextToken=forged", "nextToken=Z2diOi0x"} {
		if _, err := paginate(httptest.NewRequest("GET", "/things?"+q, nil), 7, "nextToken", "maxResults", 50, 250); err == nil {
			t.Errorf("%s accepted", q)
		}
	}
}

func TestCertIDFromARN(t *testing.T) {
	id := strings.Repeat("a1", 32)
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"arn:aws:iot:us-east-1:123456789012:cert/" + id, id, true},
		{id, id, true},
		{"arn:aws:iot:us-east-1:123456789012:thinggroup/g", "", false},
		{"arn:aws:iam::123456789012:cert/" + id, "", false},
		{"arn:aws:iot:us-east-1:123456789012:cert/ABC", "", false},
		{strings.ToUpper(id), "", false},
	}
	for _, tc := range cases {
		got, err := certIDFromARN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("certIDFromARN(%q) = %q, %v", tc.in, got, err)
		}
	}
}
