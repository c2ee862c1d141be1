package policy

import (
	"strings"
	"testing"
)

// TestGreengrassActionsIgnoreThingVariables: "Thing policy variables (iot:Connection.Thing.*) aren't
// supported for in AWS IoT policies for core devices or Greengrass data plane operations. Instead, you
// can use a wildcard" (seeds/greengrass-device-authentication-and-authorization.txt, the page ggbroker
// started from). For greengrass: actions a statement that uses one does not match; for iot: actions
// the same variables still resolve.
func TestGreengrassActionsIgnoreThingVariables(t *testing.T) {
	set := NewSet(testEnv,
		mustParse(t, "thingvar", `{"Version": "2012-10-17", "Statement": [
		  {"Effect": "Allow", "Action": ["greengrass:Discover", "iot:Publish"],
		   "Resource": ["arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}", "arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"]},
		  {"Effect": "Allow", "Action": "greengrass:Discover", "Resource": "arn:aws:iot:*:*:thing/*",
		   "Condition": {"StringEquals": {"iot:Connection.Thing.Attributes[zone]": "a"}}},
		  {"Effect": "Allow", "Action": "greengrass:Discover", "Resource": "arn:aws:iot:*:*:thing/Wild*"},
		  {"Effect": "Deny", "Action": "greengrass:*", "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"}]}`))
	zoned := &Context{ClientID: "sensor-1", Thing: &Thing{Name: "sensor-1", Attributes: map[string]string{"zone": "a"}}}
	runChecks(t, set, []check{
		{"thing variable in Resource: no match for greengrass:Discover", GreengrassDiscover, "thing/sensor-1", thingCtx("sensor-1"), ImplicitDeny},
		{"thing key in a Condition: no match", GreengrassDiscover, "thing/sensor-1", zoned, ImplicitDeny},
		{"case of the action does not matter", "Greengrass:discover", "thing/sensor-1", thingCtx("sensor-1"), ImplicitDeny},
		{"the wildcard the page suggests", GreengrassDiscover, "thing/WildDevice1", thingCtx("WildDevice1"), Allowed},
		{"a Deny with a thing variable denies nothing", GreengrassDiscover, "thing/WildDevice2", thingCtx("WildDevice2"), Allowed},
		{"iot: actions still resolve thing variables", ActionPublish, "topic/sensor-1/t", thingCtx("sensor-1"), Allowed},
	})
	_, diag := set.Evaluate(Request{Action: GreengrassDiscover, ARN: arnPrefix + "thing/sensor-1", Context: thingCtx("sensor-1")})
	if !strings.Contains(diag.String(), "not supported for greengrass: actions") || !strings.Contains(diag.String(), "${iot:Connection.Thing.ThingName}") {
		t.Fatalf("the implicit deny does not say why: %s", diag)
	}
}

// TestPolicyWarnings: what AWS IoT stores without complaint but never matches is warned about.
func TestPolicyWarnings(t *testing.T) {
	cases := []struct {
		name, stmt string
		want       []string // substrings, one warning each; none when empty
	}{
		{"known actions", `{"Effect": "Allow", "Action": ["iot:Publish", "iot:receive", "iotjobsdata:DescribeJobExecution", "greengrass:Discover"], "Resource": "*"}`, nil},
		{"wildcards that match known actions", `{"Effect": "Allow", "Action": ["iot:*", "iot:Pub*", "greengrass:*", "*"], "Resource": "*"}`, nil},
		{"typo", `{"Effect": "Allow", "Action": "iot:Publsh", "Resource": "*"}`, []string{`"iot:Publsh" is not an AWS IoT policy action (did you mean iot:Publish?)`}},
		{"unknown greengrass action", `{"Effect": "Allow", "Action": "greengrass:Discovery", "Resource": "*"}`, []string{"greengrass:Discovery", "did you mean greengrass:Discover?"}},
		{"wildcard matching nothing", `{"Effect": "Allow", "Action": "iot:Pulp*", "Resource": "*"}`, []string{"iot:Pulp*"}},
		{"far from any action: the known ones listed", `{"Effect": "Allow", "Action": "iot:CreateThing", "Resource": "*"}`, []string{"known iot: actions: iot:Connect,", "iot:AssumeRoleWithCertificate"}},
		{"unknown vendor", `{"Effect": "Allow", "Action": "foo:bar", "Resource": "*"}`, []string{`"foo:"`}},
		{"thing variable for greengrass:Discover", `{"Effect": "Allow", "Action": "greengrass:Discover", "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"}`,
			[]string{"thing policy variables", "wildcard"}},
		{"thing variable for iot:Publish only", `{"Effect": "Allow", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}"}`, nil},
		{"thing key in a condition of greengrass:*", `{"Effect": "Allow", "Action": "greengrass:*", "Resource": "*", "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}}`,
			[]string{"thing policy variables"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, "p", `{"Version": "2012-10-17", "Statement": [`+tc.stmt+`]}`)
			ws := p.Warnings()
			if len(tc.want) == 0 {
				if len(ws) != 0 {
					t.Fatalf("unexpected warnings: %q", ws)
				}
				return
			}
			if len(ws) != 1 {
				t.Fatalf("want one warning, got %q", ws)
			}
			for _, w := range tc.want {
				if !strings.Contains(ws[0], w) {
					t.Errorf("warning does not say %s: %s", w, ws[0])
				}
			}
			if !strings.HasPrefix(ws[0], "statement 0") {
				t.Errorf("warning does not name the statement: %s", ws[0])
			}
		})
	}
}

// TestCheckAction: `policy check` evaluates only actions AWS IoT checks.
func TestCheckAction(t *testing.T) {
	for _, a := range []string{"iot:Publish", "iot:publish", "iot:ListRetainedMessages", "iotjobsdata:UpdateJobExecution", "greengrass:Discover"} {
		if err := CheckAction(a); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
	for a, want := range map[string]string{"iot:Publsh": "did you mean iot:Publish", "foo:bar": "not an AWS IoT policy action", "iot:*": "wildcard", "Publish": "not an AWS IoT policy action"} {
		if err := CheckAction(a); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", a, err, want)
		}
	}
}
