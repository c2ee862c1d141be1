package policy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExplicitDenyAcrossPolicies(t *testing.T) {
	allow := mustParse(t, "AllowAll", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`)
	deny := mustParse(t, "NoAdmin", `{"Version":"2012-10-17","Statement":[
		{"Sid":"Other","Effect":"Deny","Action":"iot:Subscribe","Resource":"*"},
		{"Sid":"DenyAdmin","Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/admin/*"}]}`)
	for _, order := range [][]*Policy{{allow, deny}, {deny, allow}} {
		set := NewSet(testEnv, order...)
		d, diag := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "admin/reboot", Context: clientCtx("c")})
		if d != ExplicitDeny {
			t.Fatalf("got %v, want EXPLICIT_DENY", d)
		}
		want := Diagnostic{Policy: "NoAdmin", Statement: 1, Sid: "DenyAdmin",
			Reason: `statement 1 (Sid "DenyAdmin") of policy "NoAdmin" explicitly denies iot:Publish on arn:aws:iot:us-east-1:123456789012:topic/admin/reboot`}
		if diag.Policy != want.Policy || diag.Statement != want.Statement || diag.Sid != want.Sid || diag.Reason != want.Reason {
			t.Errorf("diagnostic %+v, want %+v", diag, want)
		}
		d, diag = set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "user/x", Context: clientCtx("c")})
		if d != Allowed || diag.Policy != "AllowAll" || diag.Statement != 0 || diag.Reason != `statement 0 of policy "AllowAll" allows it` {
			t.Errorf("got %v %+v", d, diag)
		}
	}
}

func TestEmptySet(t *testing.T) {
	for _, set := range []*Set{nil, NewSet(testEnv), NewSet(testEnv, nil)} {
		d, diag := set.Evaluate(Request{Action: ActionConnect, Kind: KindClient, Name: "c"})
		if d != ImplicitDeny || diag.Statement != -1 || diag.Reason != "no statement allowed it" {
			t.Errorf("got %v %+v", d, diag)
		}
	}
	if ImplicitDeny.String() != "IMPLICIT_DENY" || Allowed.String() != "ALLOWED" || ExplicitDeny.String() != "EXPLICIT_DENY" {
		t.Error("Decision strings are not the TestAuthorization values")
	}
	var zero Decision
	if zero != ImplicitDeny {
		t.Error("the zero Decision must deny")
	}
}

func TestWildcardsAndActions(t *testing.T) {
	p := mustParse(t, "P", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/some/?????/topic"},
		{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/some/sensor???/topic"},
		{"Effect":"Allow","Action":"IOT:RECEIVE","Resource":"arn:aws:iot:us-east-1:123456789012:topic/a/+/b"},
		{"Effect":"Allow","Action":"iot:Get*","Resource":"arn:aws:iot:*:*:thing/*"},
		{"Effect":"Allow","Action":"iot:Custom?","Resource":"*"},
		{"Effect":"Allow","Action":"*","Resource":"arn:aws:iot:us-east-1:123456789012:topic/open/*"},
		{"Effect":"Allow","NotAction":["iot:Publish","iot:Receive","iot:Subscribe","iot:Connect","iot:RetainPublish"],"Resource":"arn:aws:iot:us-east-1:123456789012:client/notaction"},
		{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/esc/${*}/${?}/${$}"}]}`)
	set := NewSet(testEnv, p)
	c := clientCtx("c")
	checks := []check{
		{"? is one character", ActionPublish, "topic/some/abcde/topic", c, Allowed},
		{"? does not match four", ActionPublish, "topic/some/abcd/topic", c, ImplicitDeny},
		{"? does not match six", ActionPublish, "topic/some/abcdef/topic", c, ImplicitDeny},
		{"? matches one character, not one byte", ActionPublish, "topic/some/héllo/topic", c, Allowed},
		{"? matches /", ActionPublish, "topic/some/ab/de/topic", c, Allowed},
		{"sensor???", ActionSubscribe, "topicfilter/some/sensor123/topic", c, Allowed},
		{"sensor??? not sensor12", ActionSubscribe, "topicfilter/some/sensor12/topic", c, ImplicitDeny},
		{"+ literal in resource", ActionReceive, "topic/a/+/b", c, Allowed},
		{"+ is not a wildcard", ActionReceive, "topic/a/x/b", c, ImplicitDeny},
		{"action case-insensitive (policy upper)", "iot:receive", "topic/a/+/b", c, Allowed},
		{"action case-insensitive (request upper)", "IOT:Receive", "topic/a/+/b", c, Allowed},
		{"action wildcard, known action", "iot:GetThingShadow", "thing/t1", c, Allowed},
		{"action wildcard, region wildcard", "iot:getthingshadow", "thing/t1", c, Allowed},
		{"Get* does not cover Update", "iot:UpdateThingShadow", "thing/t1", c, ImplicitDeny},
		{"unknown action with ?", "iot:CustomX", "topic/x", c, Allowed},
		{"unknown action case-insensitive", "IOT:CUSTOMY", "topic/x", c, Allowed},
		{"? needs one character", "iot:Custom", "topic/x", c, ImplicitDeny},
		{"* action", ActionPublish, "topic/open/x", c, Allowed},
		{"* action, other vendor", GreengrassDiscover, "topic/open/x", c, Allowed},
		{"NotAction allows other actions", GreengrassDiscover, "client/notaction", c, Allowed},
		{"NotAction excludes listed", ActionConnect, "client/notaction", c, ImplicitDeny},
		{"escapes are literal", ActionPublish, "topic/esc/*/?/$", c, Allowed},
		{"escaped * is not a wildcard", ActionPublish, "topic/esc/x/?/$", c, ImplicitDeny},
	}
	runChecks(t, set, checks)
}

func TestUnresolvedVariables(t *testing.T) {
	p := mustParse(t, "P", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
		{"Effect":"Allow","Action":"iot:Publish","Resource":["arn:aws:iot:us-east-1:123456789012:topic/t/${iot:Connection.Thing.ThingTypeName}","arn:aws:iot:us-east-1:123456789012:topic/c/${iot:ClientId}"]},
		{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/c/${iot:Connection.Thing.ThingName}"},
		{"Effect":"Deny","Action":"iot:Receive","NotResource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/*"},
		{"Effect":"Allow","Action":"iot:Receive","Resource":"*"},
		{"Effect":"Allow","Action":"iot:Subscribe","Resource":"*","Condition":{"StringNotEquals":{"iot:ClientId":"${iot:Connection.Thing.ThingName}"}}}]}`)
	set := NewSet(testEnv, p)
	unreg := clientCtx("dev")
	reg := thingCtx("dev")

	d, diag := set.Evaluate(Request{Action: ActionConnect, Kind: KindClient, Name: "dev", Context: unreg})
	if d != ImplicitDeny || !slices.Equal(diag.Unresolved, []string{"${iot:Connection.Thing.ThingName}"}) {
		t.Errorf("connect unregistered: %v %+v", d, diag)
	}
	if !strings.Contains(diag.String(), "${iot:Connection.Thing.ThingName}") {
		t.Errorf("Diagnostic.String() %q does not name the variable", diag.String())
	}
	// One Resource entry with an unresolved variable does not stop the next.
	if d, diag := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "c/dev", Context: unreg}); d != Allowed {
		t.Errorf("publish c/dev unregistered: %v %+v", d, diag)
	}
	// A Deny whose variable does not resolve denies nothing (IAM); resolved, it denies.
	if d, _ := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "c/dev", Context: reg}); d != ExplicitDeny {
		t.Errorf("publish c/dev registered: %v, want EXPLICIT_DENY", d)
	}
	// NotResource with an unresolved variable: the Deny does not apply.
	if d, _ := set.Evaluate(Request{Action: ActionReceive, Kind: KindTopic, Name: "x/y", Context: unreg}); d != Allowed {
		t.Errorf("receive unregistered: %v", d)
	}
	if d, _ := set.Evaluate(Request{Action: ActionReceive, Kind: KindTopic, Name: "x/y", Context: reg}); d != ExplicitDeny {
		t.Errorf("receive registered outside own prefix: %v", d)
	}
	if d, _ := set.Evaluate(Request{Action: ActionReceive, Kind: KindTopic, Name: "dev/y", Context: reg}); d != Allowed {
		t.Errorf("receive registered inside own prefix: %v", d)
	}
	// A condition value with an unresolved variable: the statement does not
	// apply, even for a negated operator.
	d, diag = set.Evaluate(Request{Action: ActionSubscribe, Kind: KindTopicFilter, Name: "x", Context: unreg})
	if d != ImplicitDeny || len(diag.Unresolved) != 1 {
		t.Errorf("subscribe unregistered: %v %+v", d, diag)
	}
	if d, _ := set.Evaluate(Request{Action: ActionSubscribe, Kind: KindTopicFilter, Name: "x", Context: &Context{ClientID: "a", Thing: &Thing{Name: "b"}}}); d != Allowed {
		t.Errorf("subscribe, client ID differs from thing: %v", d)
	}
	// A nil Context resolves nothing.
	if d, _ := set.Evaluate(Request{Action: ActionConnect, Kind: KindClient, Name: "dev"}); d != ImplicitDeny {
		t.Errorf("nil context: %v", d)
	}
}

func TestVersion2008VariablesAreLiteral(t *testing.T) {
	for _, doc := range []string{
		`{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}"}}`,
		`{"Statement":{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}"}}`,
	} {
		set := NewSet(testEnv, mustParse(t, "old", doc))
		c := clientCtx("dev")
		if d, _ := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "dev", Context: c}); d != ImplicitDeny {
			t.Errorf("variable substituted in %s", doc)
		}
		if d, _ := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "${iot:ClientId}", Context: c}); d != Allowed {
			t.Errorf("variable not literal in %s", doc)
		}
	}
}

func TestConditionOperators(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := &Context{
		ClientID:          "Sensor-7",
		CertificateID:     "abc",
		SourceIP:          netip.MustParseAddr("192.168.1.20"),
		Thing:             &Thing{Name: "Sensor-7", TypeName: "sensor", Attributes: map[string]string{"floor": "3", "installed": "2024-01-15T00:00:00Z", "zone": "a*"}},
		ConnectAttributes: []string{"PersistentConnect"},
	}
	v6 := &Context{ClientID: "v6", SourceIP: netip.MustParseAddr("2001:db8::1")}
	mapped := &Context{ClientID: "m", SourceIP: netip.MustParseAddr("::ffff:10.0.0.1")}
	tests := []struct {
		name string
		cond string
		ctx  *Context
		want bool
	}{
		{"StringEquals", `{"StringEquals":{"iot:ClientId":"Sensor-7"}}`, c, true},
		{"StringEquals is case-sensitive", `{"StringEquals":{"iot:ClientId":"sensor-7"}}`, c, false},
		{"StringEquals any of the values", `{"StringEquals":{"iot:ClientId":["x","Sensor-7"]}}`, c, true},
		{"StringEquals * is literal", `{"StringEquals":{"iot:ClientId":"Sensor-*"}}`, c, false},
		{"StringEquals absent key", `{"StringEquals":{"iot:Connection.Thing.Attributes[nope]":"x"}}`, c, false},
		{"StringEquals with a variable", `{"StringEquals":{"iot:ClientId":"${iot:Connection.Thing.ThingName}"}}`, c, true},
		{"StringEquals number value", `{"StringEquals":{"iot:Connection.Thing.Attributes[floor]":3}}`, c, true},
		{"StringNotEquals", `{"StringNotEquals":{"iot:ClientId":"other"}}`, c, true},
		{"StringNotEquals match", `{"StringNotEquals":{"iot:ClientId":"Sensor-7"}}`, c, false},
		{"StringNotEquals absent key is true", `{"StringNotEquals":{"iot:Connection.Thing.Attributes[nope]":"x"}}`, c, true},
		{"StringEqualsIgnoreCase", `{"StringEqualsIgnoreCase":{"iot:ClientId":"SENSOR-7"}}`, c, true},
		{"StringNotEqualsIgnoreCase", `{"StringNotEqualsIgnoreCase":{"iot:ClientId":"SENSOR-7"}}`, c, false},
		{"StringLike", `{"StringLike":{"iot:ClientId":"Sensor-?"}}`, c, true},
		{"StringLike star", `{"StringLike":{"iot:ClientId":"Sens*"}}`, c, true},
		{"StringLike no", `{"StringLike":{"iot:ClientId":"Gate*"}}`, c, false},
		{"StringLike value with * matches literally via variable", `{"StringLike":{"iot:Connection.Thing.Attributes[zone]":"${iot:Connection.Thing.Attributes[zone]}"}}`, c, true},
		{"StringNotLike", `{"StringNotLike":{"iot:ClientId":"Gate*"}}`, c, true},
		{"StringEqualsIfExists absent", `{"StringEqualsIfExists":{"iot:Connection.Thing.Attributes[nope]":"x"}}`, c, true},
		{"StringEqualsIfExists present", `{"StringEqualsIfExists":{"iot:ClientId":"x"}}`, c, false},
		{"NumericEquals", `{"NumericEquals":{"iot:Connection.Thing.Attributes[floor]":"3"}}`, c, true},
		{"NumericNotEquals", `{"NumericNotEquals":{"iot:Connection.Thing.Attributes[floor]":"4"}}`, c, true},
		{"NumericLessThan", `{"NumericLessThan":{"iot:Connection.Thing.Attributes[floor]":"10"}}`, c, true},
		{"NumericLessThanEquals", `{"NumericLessThanEquals":{"iot:Connection.Thing.Attributes[floor]":"3"}}`, c, true},
		{"NumericGreaterThan", `{"NumericGreaterThan":{"iot:Connection.Thing.Attributes[floor]":"3"}}`, c, false},
		{"NumericGreaterThanEquals", `{"NumericGreaterThanEquals":{"iot:Connection.Thing.Attributes[floor]":3}}`, c, true},
		{"Numeric on a non-number", `{"NumericEquals":{"iot:ClientId":"3"}}`, c, false},
		{"DateLessThan CurrentTime", `{"DateLessThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}`, c, true},
		{"DateGreaterThan CurrentTime", `{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}`, c, false},
		{"DateGreaterThanEquals epoch", `{"DateGreaterThanEquals":{"aws:EpochTime":"1748779200"}}`, c, true},
		{"DateLessThanEquals date only", `{"DateLessThanEquals":{"aws:CurrentTime":"2025-06-01"}}`, c, false},
		{"DateEquals attribute", `{"DateEquals":{"iot:Connection.Thing.Attributes[installed]":"2024-01-15T00:00:00Z"}}`, c, true},
		{"DateNotEquals attribute", `{"DateNotEquals":{"iot:Connection.Thing.Attributes[installed]":"2024-01-16"}}`, c, true},
		{"NumericLessThan EpochTime", `{"NumericLessThan":{"aws:EpochTime":"2000000000"}}`, c, true},
		{"Bool true", `{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}`, c, true},
		{"Bool JSON true", `{"Bool":{"iot:Connection.Thing.IsAttached":true}}`, c, true},
		{"Bool false", `{"Bool":{"iot:Connection.Thing.IsAttached":"false"}}`, c, false},
		{"Bool false when not attached", `{"Bool":{"iot:Connection.Thing.IsAttached":"false"}}`, v6, true},
		{"IpAddress", `{"IpAddress":{"aws:SourceIp":"192.168.1.0/24"}}`, c, true},
		{"IpAddress single", `{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.1.20"]}}`, c, true},
		{"IpAddress no", `{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`, c, false},
		{"IpAddress v6", `{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}`, v6, true},
		{"IpAddress v4-mapped", `{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`, mapped, true},
		{"NotIpAddress", `{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`, c, true},
		{"NotIpAddress no", `{"NotIpAddress":{"aws:SourceIp":"192.168.0.0/16"}}`, c, false},
		{"IpAddress absent", `{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}`, clientCtx("x"), false},
		{"StringEquals SourceIp", `{"StringEquals":{"aws:SourceIp":"192.168.1.20"}}`, c, true},
		{"Null true on absent", `{"Null":{"iot:Connection.Thing.ThingTypeName":"true"}}`, v6, true},
		{"Null true on present", `{"Null":{"iot:Connection.Thing.ThingTypeName":"true"}}`, c, false},
		{"Null false on present", `{"Null":{"iot:Connection.Thing.ThingTypeName":"false"}}`, c, true},
		{"Null on empty list key", `{"Null":{"iot:ConnectAttributes":"true"}}`, v6, true},
		{"ArnEquals LastWillTopic absent", `{"ArnEquals":{"iot:LastWillTopic":"arn:aws:iot:us-east-1:123456789012:topic/w"}}`, c, false},
		{"ArnNotEquals LastWillTopic absent", `{"ArnNotEquals":{"iot:LastWillTopic":"arn:aws:iot:us-east-1:123456789012:topic/w"}}`, c, true},
		{"ArnLike LastWillTopic", `{"ArnLike":{"iot:LastWillTopic":"arn:aws:iot:*:*:topic/will/*"}}`, &Context{ClientID: "w", LastWillTopic: "will/x/y"}, true},
		{"ArnLike parts: * does not cross ':'", `{"ArnLike":{"iot:LastWillTopic":"arn:aws:iot:*:topic/will/*"}}`, &Context{ClientID: "w", LastWillTopic: "will/x"}, false},
		{"ArnNotLike", `{"ArnNotLike":{"iot:LastWillTopic":"arn:aws:iot:*:*:topic/other/*"}}`, &Context{ClientID: "w", LastWillTopic: "will/x"}, true},
		{"ForAnyValue absent", `{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":"LastWill"}}`, v6, false},
		{"ForAllValues absent", `{"ForAllValues:StringEquals":{"iot:ConnectAttributes":"LastWill"}}`, v6, true},
		{"ForAnyValue:StringLike", `{"ForAnyValue:StringLike":{"iot:ConnectAttributes":"Persist*"}}`, c, true},
		{"ForAllValues:StringNotLike", `{"ForAllValues:StringNotLike":{"iot:ConnectAttributes":"Persist*"}}`, c, false},
		{"plain operator on a list key", `{"StringEquals":{"iot:ConnectAttributes":"PersistentConnect"}}`, c, true},
		{"several keys are ANDed", `{"StringEquals":{"iot:ClientId":"Sensor-7","iot:Connection.Thing.ThingTypeName":"other"}}`, c, false},
		{"several operators are ANDed", `{"StringEquals":{"iot:ClientId":"Sensor-7"},"Bool":{"iot:Connection.Thing.IsAttached":"false"}}`, c, false},
		{"unknown key is absent", `{"StringEquals":{"iot:Nope":"x"}}`, c, false},
		{"BinaryEquals", `{"BinaryEquals":{"iot:ClientId":"Sensor-7"}}`, c, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":` + tt.cond + `}}`
			set := NewSet(testEnv, mustParse(t, tt.name, doc))
			d, diag := set.Evaluate(Request{Action: ActionConnect, Kind: KindClient, Name: tt.ctx.ClientID, Context: tt.ctx, Now: now})
			if (d == Allowed) != tt.want {
				t.Errorf("got %v (%v), want allowed=%v", d, diag, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		stmt      int
		contains  string
	}{
		{"not JSON", `{`, -1, "invalid JSON"},
		{"not an object", `[]`, -1, "invalid JSON"},
		{"bad version", `{"Version":"2020-01-01","Statement":[]}`, -1, "Version"},
		{"no statement", `{"Version":"2012-10-17"}`, -1, "no Statement"},
		{"empty statement list", `{"Version":"2012-10-17","Statement":[]}`, -1, "empty"},
		{"statement is a string", `{"Version":"2012-10-17","Statement":"x"}`, -1, "Statement: unknown type string"},
		{"unknown top element", `{"Version":"2012-10-17","statement":[]}`, -1, "unknown element"},
		{"bad effect", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"},{"Effect":"allow","Action":"iot:Connect","Resource":"*"}]}`, 1, "Effect"},
		{"no effect", `{"Version":"2012-10-17","Statement":[{"Action":"iot:Connect","Resource":"*"}]}`, 0, "no Effect"},
		{"action number", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"},{"Effect":"Allow","Action":"iot:Connect","Resource":"*"},{"Effect":"Deny","Action":3,"Resource":"*"}]}`, 2, "Action: unknown type number"},
		{"action without vendor", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"Publish","Resource":"*"}]}`, 0, "not an action"},
		{"action and notaction", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","NotAction":"iot:Publish","Resource":"*"}]}`, 0, "both Action and NotAction"},
		{"no action", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`, 0, "no Action"},
		{"no resource", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*"}]}`, 0, "no Resource"},
		{"resource not an ARN", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"topic/a"}]}`, 0, "not an ARN"},
		{"empty resource list", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":[]}]}`, 0, "empty list"},
		{"resource list item", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":["*",{}]}]}`, 0, "item 1"},
		{"resource and notresource", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","NotResource":"*"}]}`, 0, "both Resource and NotResource"},
		{"principal", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"iot:*","Resource":"*"}]}`, 0, "Principal"},
		{"unknown field", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","action":"iot:*","Resource":"*"}]}`, 0, "unknown element"},
		{"unknown operator", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"},{"Sid":"S","Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringSorta":{"iot:ClientId":"x"}}}]}`, 1, `unknown condition operator "StringSorta"`},
		{"Null IfExists", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"NullIfExists":{"iot:ClientId":"true"}}}]}`, 0, "unknown condition operator"},
		{"bad number", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"NumericLessThan":{"iot:ClientId":"ten"}}}]}`, 0, "not a number"},
		{"bad date", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}}]}`, 0, "not a date"},
		{"bad ip", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/99"}}}]}`, 0, "not an IP"},
		{"bad bool", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"yes"}}}]}`, 0, "not true or false"},
		{"condition not object", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":[]}]}`, 0, "Condition: unknown type list"},
		{"condition value object", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringEquals":{"iot:ClientId":{}}}}]}`, 0, "unknown type object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDocument("P", []byte(tt.doc))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if pe.Policy != "P" || pe.Statement != tt.stmt || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("got %q (statement %d), want statement %d and %q", err, pe.Statement, tt.stmt, tt.contains)
			}
			if tt.stmt >= 0 && !strings.Contains(err.Error(), `policy "P": statement `) {
				t.Errorf("error %q does not name the statement", err)
			}
		})
	}
	// A Sid appears in the message.
	_, err := ParseDocument("P", []byte(`{"Version":"2012-10-17","Statement":[{"Sid":"Mine","Effect":"Maybe","Action":"iot:*","Resource":"*"}]}`))
	if err == nil || err.Error() != `policy "P": statement 0 ("Mine"): Effect: "Maybe", want "Allow" or "Deny"` {
		t.Errorf("got %v", err)
	}
}

func TestExpandResource(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"client/c1", arnPrefix + "client/c1", ""},
		{"topic/a/b", arnPrefix + "topic/a/b", ""},
		{"topicfilter/a/+/#", arnPrefix + "topicfilter/a/+/#", ""},
		{"thing/t1", arnPrefix + "thing/t1", ""},
		{"arn:aws:iot:eu-west-1:1:topic/x", "arn:aws:iot:eu-west-1:1:topic/x", ""},
		{"*", "*", ""}, // iot:ListRetainedMessages' resource
		{"arn:aws:iot", "", "six"},
		{"queue/x", "", "want an ARN"},
		{"topic/", "", "empty"},
		{"a/b", "", "want an ARN"},
		{"", "", "want an ARN"},
	}
	for _, tt := range tests {
		got, err := ExpandResource(testEnv, tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	cn := Env{Region: "cn-north-1", AccountID: "1", Partition: "aws-cn"}
	if got, _ := ExpandResource(cn, "topic/x"); got != "arn:aws-cn:iot:cn-north-1:1:topic/x" {
		t.Errorf("partition: %q", got)
	}
}

// TestAllowDoesNotAllocate pins the hot-path promise with a test, not a
// timing: an allowed Receive/Publish decision allocates nothing.
func TestAllowDoesNotAllocate(t *testing.T) {
	set := NewSet(testEnv, benchPolicy(t, 10))
	ctx := &Context{ClientID: "sensor-1", Thing: &Thing{Name: "sensor-1"}, SourceIP: netip.MustParseAddr("10.1.2.3")}
	for _, action := range []string{ActionReceive, ActionPublish} {
		req := Request{Action: action, Kind: KindTopic, Name: "sensor-1/data/temperature", Context: ctx}
		allocs := testing.AllocsPerRun(100, func() {
			if d, _ := set.Evaluate(req); d != Allowed {
				t.Fatal(d)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per allowed decision, want 0", action, allocs)
		}
	}
}

// TestConcurrentEvaluate runs decisions on one Context from many
// goroutines (run with -race): the lazily derived certificate values must
// be safe.
func TestConcurrentEvaluate(t *testing.T) {
	cert := testCert(t, attrs(oidCN, "dev-1"))
	set := NewSet(testEnv, mustParse(t, "P", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Certificate.Subject.CommonName}/*",
		 "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"StringLike":{"aws:SourceIp":"10.*"}}}]}`))
	ctx := &Context{ClientID: "c", Certificate: cert, SourceIP: netip.MustParseAddr("10.0.0.7")}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if d, diag := set.Evaluate(Request{Action: ActionPublish, Kind: KindTopic, Name: "dev-1/x", Context: ctx}); d != Allowed {
					t.Errorf("%v %v", d, diag)
					return
				}
			}
		}()
	}
	wg.Wait()
}
