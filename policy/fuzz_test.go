package policy

import (
	"net/netip"
	"testing"
)

// fuzzContexts are asked about every policy that parses, so that the
// evaluator runs on whatever the parser accepts.
var fuzzContext = &Context{
	ClientID:          "dev+1*",
	CertificateID:     "abc",
	Thing:             &Thing{Name: "dev+1*", TypeName: "t", Attributes: map[string]string{"a": "1"}},
	SourceIP:          netip.MustParseAddr("10.0.0.1"),
	ConnectAttributes: []string{"LastWill"},
	LastWillTopic:     "w/x",
}

func fuzzEvaluate(set *Set) {
	for _, r := range []Request{
		{Action: ActionConnect, Kind: KindClient, Name: "dev+1*", Context: fuzzContext},
		{Action: ActionPublish, Kind: KindTopic, Name: "a/é/b", Context: fuzzContext},
		{Action: ActionSubscribe, Kind: KindTopicFilter, Name: "a/+/#", Context: fuzzContext},
		{Action: "iot:Other", Kind: "queue", Name: "q", Context: fuzzContext},
		{Action: ActionReceive, ARN: "arn:aws:iot:us-east-1:123456789012:topic/x", Context: nil},
		{Action: ActionReceive, ARN: "garbage"},
	} {
		d, diag := set.Evaluate(r)
		_ = d.String()
		_ = diag.String()
	}
}

func FuzzParseDocument(f *testing.F) {
	f.Add([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}/*"}]}`))
	f.Add([]byte(`{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":"iot:Connect","NotResource":["arn:aws:iot:*:*:topic/a?b"],"Condition":{"ForAllValues:StringLike":{"iot:ConnectAttributes":["*"]},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}}`))
	f.Add([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":{"ArnLike":{"iot:LastWillTopic":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.Attributes[a]}*"},"DateLessThan":{"aws:CurrentTime":"2030-01-01"},"NumericEquals":{"iot:Connection.Thing.Attributes[a]":1},"Null":{"iot:CertificateId":false}}}]}`))
	f.Add([]byte(`{"Statement":{"Effect":"Allow","Action":"*","Resource":"arn:${*}${?}${$}${"}}`))
	f.Add([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":3}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseDocument("fuzz", data)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %T is not a *ParseError", err)
			}
			_ = err.Error()
			return
		}
		fuzzEvaluate(NewSet(testEnv, p))
	})
}

func FuzzParseSelectionRule(f *testing.F) {
	for _, s := range []string{
		"thingName: MyClientDevice1 OR thingName: MyClientDevice2",
		"thingName: MyClientDevice*",
		"thingName: *",
		`thingName: MyTeam\:ClientDevice1`,
		"thingName: *a* AND thingName: b* OR thingName:c",
		"thingName: a OR",
	} {
		f.Add(s, "MyClientDevice1")
	}
	f.Fuzz(func(t *testing.T, rule, name string) {
		r, err := ParseSelectionRule(rule)
		if err != nil {
			return
		}
		_ = r.Match(name)
		_ = r.String()
	})
}

func FuzzParseDeviceGroups(f *testing.F) {
	f.Add([]byte(ggRestrictive))
	f.Add([]byte(ggPermissive))
	f.Add([]byte(`{"definitions":{"G":{"selectionRule":"thingName: a*","policyName":"P"}},"policies":{"P":{"S":{"operations":"mqtt:*","resources":["mqtt:topic:${iot:Connection.Thing.ThingName}/*"]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseDeviceGroups(data)
		if err != nil {
			return
		}
		for _, name := range []string{"a", "dev+1*", "MyClientDevice1", ""} {
			fuzzEvaluate(NewSet(testEnv, g.PoliciesFor(name)...))
			_ = g.GroupsFor(name)
		}
	})
}
