package policy

import "testing"

// TestSetStable: a Set whose statements read the time is not Stable (authz keeps allow decisions of
// Stable sets per session).
func TestSetStable(t *testing.T) {
	cases := []struct {
		name, doc string
		stable    bool
	}{
		{"plain", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Receive","Resource":"*"}]}`, true},
		{"thing variable", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"}]}`, true},
		{"current time condition", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Receive","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}]}`, false},
		{"epoch time condition", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Receive","Resource":"*","Condition":{"NumericGreaterThan":{"aws:EpochTime":"1"}}}]}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseDocument("p", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := NewSet(Env{}, p).Stable(); got != tc.stable {
				t.Fatalf("Stable() = %v, want %v", got, tc.stable)
			}
		})
	}
}
