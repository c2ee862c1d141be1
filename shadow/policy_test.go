package shadow

import (
	"testing"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// TestDefaultPolicyAllowsOwnShadow: the default device policy a new state directory gets lets a
// device use its own shadow topics (classic and named, the SDK v2's +-filters included) and shadow
// HTTPS actions on its own thing, and nothing of another thing's shadow.
func TestDefaultPolicyAllowsOwnShadow(t *testing.T) {
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	st, err := state.OpenState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := state.ParsePolicyFile(state.PolicyPath(st.PolicyDir, st.DefaultPolicy), st.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	set := policy.NewSet(policy.Env{Region: cfg.Core.Region, AccountID: cfg.Core.AccountID}, p)
	ctx := &policy.Context{ClientID: "dev1", Thing: &policy.Thing{Name: "dev1"}}
	cases := []struct {
		action, kind, name string
		allowed            bool
	}{
		{"iot:Publish", policy.KindTopic, "$aws/things/dev1/shadow/update", true},
		{"iot:Publish", policy.KindTopic, "$aws/things/dev1/shadow/name/cfg/get", true},
		{"iot:Receive", policy.KindTopic, "$aws/things/dev1/shadow/update/delta", true},
		{"iot:Receive", policy.KindTopic, "$aws/things/dev1/shadow/name/cfg/update/documents", true},
		{"iot:Subscribe", policy.KindTopicFilter, "$aws/things/dev1/shadow/get/+", true},
		{"iot:Subscribe", policy.KindTopicFilter, "$aws/things/dev1/shadow/name/cfg/update/accepted", true},
		{"iot:GetThingShadow", policy.KindThing, "dev1", true},
		{"iot:UpdateThingShadow", policy.KindThing, "dev1", true},
		{"iot:Publish", policy.KindTopic, "dev1/telemetry", true}, // its own topics are kept
		{"iot:Publish", policy.KindTopic, "plain/topic", false},   // scoped since issue 15
		{"iot:Publish", policy.KindTopic, "$aws/things/dev2/shadow/update", false},
		{"iot:Receive", policy.KindTopic, "$aws/things/dev2/shadow/update/delta", false},
		{"iot:Subscribe", policy.KindTopicFilter, "$aws/things/dev2/shadow/get/+", false},
		{"iot:Subscribe", policy.KindTopicFilter, "$aws/things/+/shadow/update/delta", false},
		{"iot:Publish", policy.KindTopic, "$aws/things/dev1/tunnels/notify", false},
		{"iot:UpdateThingShadow", policy.KindThing, "dev2", false},
	}
	for _, tc := range cases {
		d, diag := set.Evaluate(policy.Request{Action: tc.action, Kind: tc.kind, Name: tc.name, Context: ctx})
		if (d == policy.Allowed) != tc.allowed {
			t.Errorf("%s %s/%s: %s (%s), want allowed=%v", tc.action, tc.kind, tc.name, d, diag, tc.allowed)
		}
	}
}
