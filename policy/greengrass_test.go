package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// The two configuration examples of
// reference/greengrass-v2/client-device-auth-component.md, verbatim.
const ggRestrictive = `{
  "deviceGroups": {
    "formatVersion": "2021-03-05",
    "definitions": {
      "MyDeviceGroup": {
        "selectionRule": "thingName: MyClientDevice*",
        "policyName": "MyRestrictivePolicy"
      }
    },
    "policies": {
      "MyRestrictivePolicy": {
        "AllowConnect": {
          "statementDescription": "Allow client devices to connect.",
          "operations": [
            "mqtt:connect"
          ],
          "resources": [
            "*"
          ]
        },
        "AllowPublish": {
          "statementDescription": "Allow client devices to publish on test/topic.",
          "operations": [
            "mqtt:publish"
          ],
          "resources": [
            "mqtt:topic:test/topic"
          ]
        },
        "AllowSubscribe": {
          "statementDescription": "Allow client devices to subscribe to test/topic/response.",
          "operations": [
            "mqtt:subscribe"
          ],
          "resources": [
            "mqtt:topicfilter:test/topic/response"
          ]
        }
      }
    }
  }
}`

const ggPermissive = `{
  "deviceGroups": {
    "formatVersion": "2021-03-05",
    "definitions": {
      "MyPermissiveDeviceGroup": {
        "selectionRule": "thingName: *",
        "policyName": "MyPermissivePolicy"
      }
    },
    "policies": {
      "MyPermissivePolicy": {
        "AllowAll": {
          "statementDescription": "Allow client devices to perform all actions.",
          "operations": [
            "*"
          ],
          "resources": [
            "*"
          ]
        }
      }
    }
  }
}`

func ggSet(t *testing.T, g *DeviceGroups, thing string) *Set {
	t.Helper()
	return NewSet(testEnv, g.PoliciesFor(thing)...)
}

func TestGreengrassRestrictive(t *testing.T) {
	g, err := ParseDeviceGroups([]byte(ggRestrictive))
	if err != nil {
		t.Fatal(err)
	}
	if ps := g.PoliciesFor("MyClientDevice1"); len(ps) != 1 || ps[0].Name() != "MyRestrictivePolicy" || ps[0].Len() != 3 {
		t.Fatalf("PoliciesFor: %v", ps)
	}
	if got := g.GroupsFor("MyClientDevice1"); !slices.Equal(got, []string{"MyDeviceGroup"}) {
		t.Errorf("GroupsFor: %v", got)
	}
	dev := thingCtx("MyClientDevice1")
	runChecks(t, ggSet(t, g, "MyClientDevice1"), []check{
		{"connect", ActionConnect, "client/MyClientDevice1", dev, Allowed},
		{"connect with any client ID (resource *)", ActionConnect, "client/whatever", dev, Allowed},
		{"publish test/topic", ActionPublish, "topic/test/topic", dev, Allowed},
		{"publish elsewhere", ActionPublish, "topic/test/other", dev, ImplicitDeny},
		{"subscribe test/topic/response", ActionSubscribe, "topicfilter/test/topic/response", dev, Allowed},
		{"subscribe test/#", ActionSubscribe, "topicfilter/test/#", dev, ImplicitDeny},
		{"publish is not subscribe", ActionSubscribe, "topicfilter/test/topic", dev, ImplicitDeny},
		{"receive is not checked", ActionReceive, "topic/anything/at/all", dev, Allowed},
		{"retain is not checked", ActionRetainPublish, "topic/test/topic", dev, Allowed},
		{"other actions are not granted", "iot:GetThingShadow", "thing/MyClientDevice1", dev, ImplicitDeny},
	})
	_, diag := ggSet(t, g, "MyClientDevice1").Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "test/topic", Context: dev})
	if diag.Policy != "MyRestrictivePolicy" || diag.Sid != "AllowPublish" || diag.Statement != 1 ||
		diag.Reason != `statement 1 ("AllowPublish") of Greengrass policy "MyRestrictivePolicy" allows it` {
		t.Errorf("diagnostic %+v", diag)
	}
	_, diag = ggSet(t, g, "MyClientDevice1").Evaluate(Request{Action: ActionReceive, Kind: KindTopic, Name: "x", Context: dev})
	if diag.Statement != -1 || !strings.Contains(diag.Reason, "does not check iot:Receive") {
		t.Errorf("receive diagnostic %+v", diag)
	}
	// A device outside every group gets nothing, Receive included.
	if ps := g.PoliciesFor("OtherDevice"); len(ps) != 0 {
		t.Errorf("PoliciesFor(OtherDevice) = %v", ps)
	}
	other := thingCtx("OtherDevice")
	runChecks(t, ggSet(t, g, "OtherDevice"), []check{
		{"connect", ActionConnect, "client/OtherDevice", other, ImplicitDeny},
		{"receive", ActionReceive, "topic/test/topic", other, ImplicitDeny},
	})
}

func TestGreengrassPermissive(t *testing.T) {
	g, err := ParseDeviceGroups([]byte(ggPermissive))
	if err != nil {
		t.Fatal(err)
	}
	dev := thingCtx("AnyDevice")
	runChecks(t, ggSet(t, g, "AnyDevice"), []check{
		{"connect", ActionConnect, "client/x", dev, Allowed},
		{"publish", ActionPublish, "topic/$aws/things/x", dev, Allowed},
		{"subscribe", ActionSubscribe, "topicfilter/#", dev, Allowed},
		{"receive", ActionReceive, "topic/a", dev, Allowed},
	})
	if ps := g.PoliciesFor(""); len(ps) != 0 {
		t.Errorf("a client that is not a thing is in no group: %v", ps)
	}
}

func TestGreengrassVariablesWildcardsAndUnion(t *testing.T) {
	cfg := `{
	  "formatVersion": "2021-03-05",
	  "definitions": {
	    "Sensors": {"selectionRule": "thingName: sensor-*", "policyName": "Own"},
	    "Ones":    {"selectionRule": "thingName: *-1", "policyName": "Shared"},
	    "Again":   {"selectionRule": "thingName: sensor-1", "policyName": "Own"}
	  },
	  "policies": {
	    "Own": {
	      "Connect": {"operations": ["mqtt:connect"], "resources": ["mqtt:clientId:${iot:Connection.Thing.ThingName}"]},
	      "PubSub":  {"operations": ["mqtt:publish", "mqtt:subscribe"],
	                  "resources": ["mqtt:topic:${iot:Connection.Thing.ThingName}/*", "mqtt:topicfilter:client/+/status"]}
	    },
	    "Shared": {
	      "All": {"operations": "mqtt:*", "resources": ["mqtt:topic:shared/*", "mqtt:clientId:any-?"]}
	    }
	  }
	}`
	g, err := ParseDeviceGroups([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ps := g.PoliciesFor("sensor-1")
	if names := []string{ps[0].Name(), ps[1].Name()}; len(ps) != 2 || !slices.Equal(names, []string{"Shared", "Own"}) && !slices.Equal(names, []string{"Own", "Shared"}) {
		t.Fatalf("union: %v", ps)
	}
	s1 := thingCtx("sensor-1")
	runChecks(t, ggSet(t, g, "sensor-1"), []check{
		{"connect with own name", ActionConnect, "client/sensor-1", s1, Allowed},
		{"connect as another", ActionConnect, "client/sensor-2", s1, ImplicitDeny},
		{"? is literal in Greengrass", ActionConnect, "client/any-x", s1, ImplicitDeny},
		{"? literal matches ?", ActionConnect, "client/any-?", s1, Allowed},
		{"publish own", ActionPublish, "topic/sensor-1/temp", s1, Allowed},
		{"publish other", ActionPublish, "topic/sensor-2/temp", s1, ImplicitDeny},
		{"subscribe the exact filter", ActionSubscribe, "topicfilter/client/+/status", s1, Allowed},
		{"not a topic the filter matches", ActionSubscribe, "topicfilter/client/client1/status", s1, ImplicitDeny},
		{"union: shared from the other group", ActionPublish, "topic/shared/x", s1, Allowed},
	})
	s2 := thingCtx("sensor-2")
	runChecks(t, ggSet(t, g, "sensor-2"), []check{
		{"no shared for sensor-2", ActionPublish, "topic/shared/x", s2, ImplicitDeny},
		{"own topics", ActionPublish, "topic/sensor-2/x", s2, Allowed},
	})
	// The thing variable does not resolve without a thing.
	d, diag := ggSet(t, g, "sensor-2").Evaluate(Request{Action: ActionConnect, Kind: KindClient, Name: "sensor-2", Context: clientCtx("sensor-2")})
	if d != ImplicitDeny || !slices.Equal(diag.Unresolved, []string{"${iot:Connection.Thing.ThingName}"}) {
		t.Errorf("unresolved: %v %+v", d, diag)
	}
}

// TestGreengrassValue feeds the generic map a YAML or viper decoder yields,
// viper's lower-cased keys included.
func TestGreengrassValue(t *testing.T) {
	v := map[string]any{
		"formatversion": "2021-03-05",
		"definitions": map[string]any{
			"group": map[any]any{"selectionrule": `thingName: MyTeam\:ClientDevice1`, "policyname": "p"},
		},
		"policies": map[string]any{
			"p": map[string]any{"s": map[string]any{"operations": []any{"mqtt:connect"}, "resources": []string{"*"}}},
		},
	}
	g, err := ParseDeviceGroupsValue(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.PoliciesFor("MyTeam:ClientDevice1")) != 1 || g.Policy("p") == nil {
		t.Error("escaped colon not selected")
	}
}

func TestGreengrassErrors(t *testing.T) {
	tests := []struct{ name, cfg, contains string }{
		{"unknown variable", `{"policies":{"P":{"S":{"operations":["mqtt:publish"],"resources":["mqtt:topic:${iot:ClientId}/x"]}}}}`, "unsupported policy variable ${iot:ClientId}"},
		{"attribute variable", `{"policies":{"P":{"S":{"operations":["mqtt:publish"],"resources":["mqtt:topic:${iot:Connection.Thing.Attributes[a]}"]}}}}`, "unsupported policy variable"},
		{"unknown operation", `{"policies":{"P":{"S":{"operations":["mqtt:Publish"],"resources":["*"]}}}}`, `unknown operation "mqtt:Publish"`},
		{"bad resource", `{"policies":{"P":{"S":{"operations":["mqtt:publish"],"resources":["topic/a"]}}}}`, "is not mqtt:"},
		{"no resources", `{"policies":{"P":{"S":{"operations":["mqtt:publish"]}}}}`, "resources: missing"},
		{"deny", `{"policies":{"P":{"S":{"effect":"DENY","operations":["mqtt:publish"],"resources":["*"]}}}}`, "can only allow"},
		{"unknown statement field", `{"policies":{"P":{"S":{"operation":["mqtt:publish"],"resources":["*"]}}}}`, "unknown field"},
		{"missing policy", `{"definitions":{"G":{"selectionRule":"thingName: a","policyName":"Nope"}},"policies":{}}`, `policyName "Nope" is not in policies`},
		{"bad rule", `{"definitions":{"G":{"selectionRule":"thingName: a OR","policyName":"P"}},"policies":{"P":{}}}`, "ends with an operator"},
		{"no rule", `{"definitions":{"G":{"policyName":"P"}},"policies":{"P":{}}}`, "selectionRule: want a string"},
		{"format", `{"formatVersion":"2020-01-01"}`, "formatVersion"},
		{"unknown top field", `{"policy":{}}`, "unknown field"},
		{"not JSON", `{`, "invalid JSON"},
		{"not an object", `[]`, "want an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDeviceGroups([]byte(tt.cfg))
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("got %v, want %q", err, tt.contains)
			}
		})
	}
	// Statement errors are *ParseError naming policy and statement.
	_, err := ParseDeviceGroups([]byte(`{"policies":{"P":{"A":{"operations":["mqtt:connect"],"resources":["*"]},"B":{"operations":["x"],"resources":["*"]}}}}`))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Policy != "P" || pe.Statement != 1 || pe.Sid != "B" {
		t.Errorf("got %#v", err)
	}
}

func TestSelectionRules(t *testing.T) {
	tests := []struct {
		rule  string
		match []string
		miss  []string
	}{
		{"thingName: MyClientDevice1 OR thingName: MyClientDevice2", []string{"MyClientDevice1", "MyClientDevice2"}, []string{"MyClientDevice3", "myclientdevice1", "MyClientDevice10"}},
		{"thingName: MyClientDevice*", []string{"MyClientDevice", "MyClientDevice1", "MyClientDeviceXYZ"}, []string{"MyClient", "xMyClientDevice1"}},
		{"thingName: *", []string{"a", "MyClientDevice1", "x:y"}, nil},
		{"thingName: *Device", []string{"Device", "MyDevice"}, []string{"MyDevice1"}},
		{"thingName: *Client*", []string{"Client", "MyClientDevice"}, []string{"MyClinetDevice"}},
		{`thingName: MyTeam\:ClientDevice1`, []string{"MyTeam:ClientDevice1"}, []string{`MyTeam\:ClientDevice1`, "MyTeamClientDevice1"}},
		{"thingName:compact", []string{"compact"}, []string{"compact2"}},
		{"thingName: a* AND thingName: *z", []string{"az", "abcz"}, []string{"a", "bz"}},
		{"thingName: x OR thingName: a* AND thingName: *z", []string{"x", "abz"}, []string{"ab", "xz"}},
		{"thingName: a-b_c OR thingName: *9", []string{"a-b_c", "t9"}, []string{"a-b_d"}},
	}
	for _, tt := range tests {
		r, err := ParseSelectionRule(tt.rule)
		if err != nil {
			t.Errorf("%q: %v", tt.rule, err)
			continue
		}
		if r.String() != tt.rule {
			t.Errorf("String() = %q", r.String())
		}
		for _, n := range tt.match {
			if !r.Match(n) {
				t.Errorf("%q should match %q", tt.rule, n)
			}
		}
		for _, n := range tt.miss {
			if r.Match(n) {
				t.Errorf("%q should not match %q", tt.rule, n)
			}
		}
	}
	for _, bad := range []string{
		"", "   ", "thingName:", "thingName: a OR", "thingName: a b", "name: x", "thingName: a*b",
		"thingName: a:b", "thingName: a or thingName: b", "OR thingName: a", "thingName: **", "thingName: a.b",
		"thingName: a AND AND thingName: b",
	} {
		if _, err := ParseSelectionRule(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	var nilRule *SelectionRule
	if nilRule.Match("x") {
		t.Error("nil rule matched")
	}
}
