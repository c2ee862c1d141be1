package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"slices"
	"testing"
)

// The policies below are the AWS IoT developer guide's own examples, from
// the pages under /work/shared/reference/aws-iot-core/, with the answers the
// pages state. Where a page's JSON is broken (a missing brace) it is fixed
// and the test says so.

type example struct {
	name   string
	page   string
	doc    string
	checks []check
}

func TestAWSExamples(t *testing.T) {
	thing1 := thingCtx("thing1")
	client1 := clientCtx("client1")
	client4 := clientCtx("client4")
	examples := []example{
		// --- pub-sub-policy.md ---
		{
			name: "registered devices (5): publish under the thing name",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/*"]}]}`,
			checks: []check{
				{"connect as the thing", ActionConnect, "client/thing1", thing1, Allowed},
				{"connect as another client ID", ActionConnect, "client/thing2", thing1, ImplicitDeny},
				{"publish under own name", ActionPublish, "topic/thing1/temp", thing1, Allowed},
				{"publish deep under own name", ActionPublish, "topic/thing1/a/b/c", thing1, Allowed},
				{"publish under another name", ActionPublish, "topic/thing2/temp", thing1, ImplicitDeny},
				{"unregistered: thing variable unresolved", ActionConnect, "client/client1", client1, ImplicitDeny},
				{"subscribe not granted", ActionSubscribe, "topicfilter/thing1/temp", thing1, ImplicitDeny},
			},
		},
		{
			name: "unregistered devices (5): publish under the client ID",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1","arn:aws:iot:us-east-1:123456789012:client/client2","arn:aws:iot:us-east-1:123456789012:client/client3"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}/*"]}]}`,
			checks: []check{
				{"client1 connects", ActionConnect, "client/client1", client1, Allowed},
				{"client3 connects", ActionConnect, "client/client3", clientCtx("client3"), Allowed},
				{"client4 cannot", ActionConnect, "client/client4", client4, ImplicitDeny},
				{"publish under own ID", ActionPublish, "topic/client1/x", client1, Allowed},
				{"publish under another ID", ActionPublish, "topic/client2/x", client1, ImplicitDeny},
				{"prefix without the slash", ActionPublish, "topic/client1", client1, ImplicitDeny},
			},
		},
		{
			name: "registered devices (6): subscribe and receive thing/room*",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/${iot:Connection.Thing.ThingName}/room*"]},
				{"Effect":"Allow","Action":["iot:Receive"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/room*"]}]}`,
			checks: []check{
				{"subscribe room1", ActionSubscribe, "topicfilter/thing1/room1", thing1, Allowed},
				{"subscribe room2", ActionSubscribe, "topicfilter/thing1/room2", thing1, Allowed},
				{"subscribe kitchen", ActionSubscribe, "topicfilter/thing1/kitchen", thing1, ImplicitDeny},
				{"receive room1", ActionReceive, "topic/thing1/room1", thing1, Allowed},
				{"receive other thing's room", ActionReceive, "topic/thing2/room1", thing1, ImplicitDeny},
				{"publish not granted", ActionPublish, "topic/thing1/room1", thing1, ImplicitDeny},
			},
		},
		{
			name: "unregistered devices (6): subscribe and receive clientID/room*",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1","arn:aws:iot:us-east-1:123456789012:client/client2","arn:aws:iot:us-east-1:123456789012:client/client3"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/${iot:ClientId}/room*"]},
				{"Effect":"Allow","Action":["iot:Receive"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}/room*"]}]}`,
			checks: []check{
				{"subscribe client1/room1", ActionSubscribe, "topicfilter/client1/room1", client1, Allowed},
				{"receive client1/room2", ActionReceive, "topic/client1/room2", client1, Allowed},
				{"subscribe client2/room1", ActionSubscribe, "topicfilter/client2/room1", client1, ImplicitDeny},
			},
		},
		{
			name: "a/* except a/restricted/*: + and # are literal, so a/# gets through Subscribe",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/a/*"},
				{"Effect":"Deny","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/a/restricted/*"},
				{"Effect":"Allow","Action":"iot:Receive","NotResource":"arn:aws:iot:us-east-1:123456789012:topic/a/restricted/*"}]}`,
			checks: []check{
				{"subscribe a/b", ActionSubscribe, "topicfilter/a/b", client1, Allowed},
				{"subscribe a/# is allowed (the page's warning)", ActionSubscribe, "topicfilter/a/#", client1, Allowed},
				{"subscribe a/restricted/x denied", ActionSubscribe, "topicfilter/a/restricted/x", client1, ExplicitDeny},
				{"subscribe a/restricted/# denied", ActionSubscribe, "topicfilter/a/restricted/#", client1, ExplicitDeny},
				{"NotResource stops receive on a/restricted/...", ActionReceive, "topic/a/restricted/secret", client1, ImplicitDeny},
				{"NotResource allows receive elsewhere", ActionReceive, "topic/a/open", client1, Allowed},
				{"NotResource allows receive outside a/ too", ActionReceive, "topic/b/c", client1, Allowed},
			},
		},
		{
			name: "deny receive on device/update, allow subscribe",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/device/update"},
				{"Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:123456789012:topic/device/update"}]}`,
			checks: []check{
				{"subscribe", ActionSubscribe, "topicfilter/device/update", client1, Allowed},
				{"receive denied", ActionReceive, "topic/device/update", client1, ExplicitDeny},
			},
		},
		{
			name: "registered devices (4): topicfilter/some/+/topic is literal",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/some/+/topic"]}]}`,
			checks: []check{
				{"the literal filter", ActionSubscribe, "topicfilter/some/+/topic", thing1, Allowed},
				{"a concrete level is not +", ActionSubscribe, "topicfilter/some/string1/topic", thing1, ImplicitDeny},
				{"# is not +", ActionSubscribe, "topicfilter/some/#", thing1, ImplicitDeny},
			},
		},
		{
			name: "registered devices (4): topicfilter/some/*/topic",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/some/*/topic"]}]}`,
			checks: []check{
				{"string1", ActionSubscribe, "topicfilter/some/string1/topic", thing1, Allowed},
				{"string2", ActionSubscribe, "topicfilter/some/string2/topic", thing1, Allowed},
				{"* spans levels", ActionSubscribe, "topicfilter/some/a/b/topic", thing1, Allowed},
				{"literal + matches *", ActionSubscribe, "topicfilter/some/+/topic", thing1, Allowed},
				{"wrong suffix", ActionSubscribe, "topicfilter/some/x/other", thing1, ImplicitDeny},
			},
		},
		{
			name: "registered devices (7): subscribe to two topics",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/my/topic","arn:aws:iot:us-east-1:123456789012:topicfilter/my/othertopic"]}]}`,
			checks: []check{
				{"my/topic", ActionSubscribe, "topicfilter/my/topic", thing1, Allowed},
				{"my/othertopic", ActionSubscribe, "topicfilter/my/othertopic", thing1, Allowed},
				{"my/#", ActionSubscribe, "topicfilter/my/#", thing1, ImplicitDeny},
			},
		},
		{
			// The page writes ${iot:Thing.ThingName}, which is not one of the
			// thing policy variables AWS defines (thing-policy-variables.md):
			// it never resolves, so the Allow grants nothing.
			name: "registered devices (8): ${iot:Thing.ThingName} is not a variable",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/my/topic/${iot:Thing.ThingName}"]}]}`,
			checks: []check{
				{"connect", ActionConnect, "client/thing1", thing1, Allowed},
				{"publish: unresolved", ActionPublish, "topic/my/topic/thing1", thing1, ImplicitDeny},
			},
		},
		{
			name: "unregistered devices (8): publish to my/topic/<client ID>",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/my/topic/${iot:ClientId}"]}]}`,
			checks: []check{
				{"own topic", ActionPublish, "topic/my/topic/client1", client1, Allowed},
				{"sub-topic not granted", ActionPublish, "topic/my/topic/client1/x", client1, ImplicitDeny},
			},
		},
		{
			name: "unregistered devices (9): everything under the client ID except bar",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1","arn:aws:iot:us-east-1:123456789012:client/client2"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}/*"]},
				{"Effect":"Deny","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:ClientId}/bar"]}]}`,
			checks: []check{
				{"foo", ActionPublish, "topic/client1/foo", client1, Allowed},
				{"bar denied", ActionPublish, "topic/client1/bar", client1, ExplicitDeny},
				{"bar/baz is not bar", ActionPublish, "topic/client1/bar/baz", client1, Allowed},
				{"another client's bar: not denied, not allowed", ActionPublish, "topic/client2/bar", client1, ImplicitDeny},
			},
		},
		{
			name: "iotmonitor: publish, receive and subscribe one topic",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1"]},
				{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/iotmonitor/provisioning/987654321098"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/iotmonitor/provisioning/987654321098"]}]}`,
			checks: []check{
				{"publish", ActionPublish, "topic/iotmonitor/provisioning/987654321098", client1, Allowed},
				{"receive", ActionReceive, "topic/iotmonitor/provisioning/987654321098", client1, Allowed},
				{"subscribe", ActionSubscribe, "topicfilter/iotmonitor/provisioning/987654321098", client1, Allowed},
				{"publish to the filter kind is not subscribe", ActionSubscribe, "topicfilter/iotmonitor/provisioning/+", client1, ImplicitDeny},
			},
		},
		{
			name: "registered devices (11): subscribe and receive my/topic",
			page: "pub-sub-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/my/topic"]},
				{"Effect":"Allow","Action":["iot:Receive"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/my/topic"]}]}`,
			checks: []check{
				{"subscribe", ActionSubscribe, "topicfilter/my/topic", thing1, Allowed},
				{"receive", ActionReceive, "topic/my/topic", thing1, Allowed},
				{"receive other", ActionReceive, "topic/my/other", thing1, ImplicitDeny},
			},
		},
		// --- basic-policy-variables.md ---
		{
			name: "client ID variable: a client ID of + is matched literally",
			page: "basic-policy-variables.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123451234510:client/${iot:ClientId}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/my/${iot:ClientId}/topic"]}]}`,
			checks: []check{
				{"client + may subscribe to my/+/topic (the page's warning)", ActionSubscribe, "topicfilter/my/+/topic", clientCtx("+"), Allowed},
				{"client * is literal, not a wildcard", ActionSubscribe, "topicfilter/my/x/topic", clientCtx("*"), ImplicitDeny},
				{"client * may subscribe to my/*/topic", ActionSubscribe, "topicfilter/my/*/topic", clientCtx("*"), Allowed},
				{"client ? is literal", ActionSubscribe, "topicfilter/my/x/topic", clientCtx("?"), ImplicitDeny},
				{"other account's ARN does not match", ActionConnect, "client/client1", client1, ImplicitDeny},
			},
		},
		// --- connect-policy.md ---
		{
			name: "deny client1 and client2, allow thing names",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1","arn:aws:iot:us-east-1:123456789012:client/client2"]},
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]}]}`,
			checks: []check{
				{"a thing connects", ActionConnect, "client/thing1", thing1, Allowed},
				{"a thing named client1 is denied", ActionConnect, "client/client1", thingCtx("client1"), ExplicitDeny},
				{"unregistered client2 is denied", ActionConnect, "client/client2", clientCtx("client2"), ExplicitDeny},
				{"unregistered client9: nothing allows", ActionConnect, "client/client9", clientCtx("client9"), ImplicitDeny},
			},
		},
		{
			name: "connect with PersistentConnect only (ForAllValues)",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*",
				"Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}}]}`,
			checks: []check{
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, Allowed},
				{"persistent", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect"}}, Allowed},
				{"persistent + will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect", "LastWill"}}, ImplicitDeny},
			},
		},
		{
			// The page's document lacks its closing brace; fixed here.
			name: "disallow PersistentConnect (ForAllValues:StringNotEquals)",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*",
				"Condition":{"ForAllValues:StringNotEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}}]}`,
			checks: []check{
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, Allowed},
				{"will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}}, Allowed},
				{"persistent", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect"}}, ImplicitDeny},
			},
		},
		{
			name: "disallow PersistentConnect with a Deny (ForAnyValue)",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*"},
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}}]}`,
			checks: []check{
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, Allowed},
				{"will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}}, Allowed},
				{"persistent + will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill", "PersistentConnect"}}, ExplicitDeny},
			},
		},
		{
			name: "only default features (ForAllValues with an empty list)",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*",
				"Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":[]}}}]}`,
			checks: []check{
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, Allowed},
				{"will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}}, ImplicitDeny},
			},
		},
		{
			name: "must use PersistentConnect (ForAnyValue)",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*",
				"Condition":{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}}]}`,
			checks: []check{
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, ImplicitDeny},
				{"persistent + will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill", "PersistentConnect"}}, Allowed},
			},
		},
		{
			name: "must have both PersistentConnect and LastWill",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["PersistentConnect","LastWill"]}}},
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}},
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["LastWill"]}}},
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":[]}}}]}`,
			checks: []check{
				{"both", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect", "LastWill"}}, Allowed},
				{"persistent only", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect"}}, ExplicitDeny},
				{"will only", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}}, ExplicitDeny},
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, ExplicitDeny},
			},
		},
		{
			name: "no PersistentConnect, LastWill allowed",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}},
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["LastWill"]}}}]}`,
			checks: []check{
				{"will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}}, Allowed},
				{"clean", ActionConnect, "client/c", &Context{ClientID: "c"}, Allowed},
				{"persistent + will", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"PersistentConnect", "LastWill"}}, ExplicitDeny},
			},
		},
		{
			// The page's ARN has *region* and *account-id* placeholders.
			name: "LastWillTopic with ArnEquals, no PersistentConnect",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":"*","Condition":{"ArnEquals":{"iot:LastWillTopic":"arn:aws:iot:us-east-1:123456789012:topic/my/lastwill/topicName"}}},
				{"Effect":"Deny","Action":["iot:Connect"],"Resource":"*","Condition":{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}}]}`,
			checks: []check{
				{"the will topic", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}, LastWillTopic: "my/lastwill/topicName"}, Allowed},
				{"another will topic", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill"}, LastWillTopic: "my/other"}, ImplicitDeny},
				{"no will", ActionConnect, "client/c", &Context{ClientID: "c"}, ImplicitDeny},
				{"persistent", ActionConnect, "client/c", &Context{ClientID: "c", ConnectAttributes: []string{"LastWill", "PersistentConnect"}, LastWillTopic: "my/lastwill/topicName"}, ExplicitDeny},
			},
		},
		{
			name: "registered devices (3): connect as the thing, subscribe my/topic/filter",
			page: "connect-policy.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]},
				{"Effect":"Allow","Action":["iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/my/topic/filter"]}]}`,
			checks: []check{
				{"connect", ActionConnect, "client/thing1", thing1, Allowed},
				{"subscribe", ActionSubscribe, "topicfilter/my/topic/filter", thing1, Allowed},
				{"a certificate not attached to a thing", ActionConnect, "client/thing1", clientCtx("thing1"), ImplicitDeny},
			},
		},
		// --- thing-policy-examples.md ---
		{
			name: "connect only when attached (Bool IsAttached)",
			page: "thing-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect"],"Resource":[ "*" ],
				"Condition":{"Bool":{"iot:Connection.Thing.IsAttached":["true"]}}}]}`,
			checks: []check{
				{"attached", ActionConnect, "client/thing1", thing1, Allowed},
				{"not attached", ActionConnect, "client/client1", client1, ImplicitDeny},
			},
		},
		{
			name: "publish when the thing has a type and an attribute",
			page: "thing-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Publish"],
				"Resource":"arn:aws:iot:us-east-1:123456789012:topic/device/stats",
				"Condition":{"StringEquals":{"iot:Connection.Thing.Attributes[attributeName]":"attributeValue","iot:Connection.Thing.ThingTypeName":"Thing_Type_Name"},
				"Bool":{"iot:Connection.Thing.IsAttached":"true"}}}]}`,
			checks: []check{
				{"type and attribute", ActionPublish, "topic/device/stats", &Context{ClientID: "t", Thing: &Thing{Name: "t", TypeName: "Thing_Type_Name", Attributes: map[string]string{"attributeName": "attributeValue"}}}, Allowed},
				{"wrong type", ActionPublish, "topic/device/stats", &Context{ClientID: "t", Thing: &Thing{Name: "t", TypeName: "Other", Attributes: map[string]string{"attributeName": "attributeValue"}}}, ImplicitDeny},
				{"no attribute", ActionPublish, "topic/device/stats", &Context{ClientID: "t", Thing: &Thing{Name: "t", TypeName: "Thing_Type_Name"}}, ImplicitDeny},
				{"not a thing", ActionPublish, "topic/device/stats", client1, ImplicitDeny},
			},
		},
		{
			name: "publish under an attribute's value",
			page: "thing-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Publish"],
				"Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.Attributes[attributeName]}/*"}]}`,
			checks: []check{
				{"under the value", ActionPublish, "topic/floor1/x", &Context{ClientID: "t", Thing: &Thing{Name: "t", Attributes: map[string]string{"attributeName": "floor1"}}}, Allowed},
				{"elsewhere", ActionPublish, "topic/floor2/x", &Context{ClientID: "t", Thing: &Thing{Name: "t", Attributes: map[string]string{"attributeName": "floor1"}}}, ImplicitDeny},
				{"attribute names are case-sensitive", ActionPublish, "topic/floor1/x", &Context{ClientID: "t", Thing: &Thing{Name: "t", Attributes: map[string]string{"AttributeName": "floor1"}}}, ImplicitDeny},
				{"not attached: unresolved, denied", ActionPublish, "topic/floor1/x", client1, ImplicitDeny},
			},
		},
		// --- retained-message-policy-examples.md ---
		{
			// The page's first document has misplaced braces; fixed here.
			name: "publish retained messages",
			page: "retained-message-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/device1"]},
				{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/device/sample/configuration"]}]}`,
			checks: []check{
				{"connect", ActionConnect, "client/device1", clientCtx("device1"), Allowed},
				{"publish", ActionPublish, "topic/device/sample/configuration", clientCtx("device1"), Allowed},
				{"retain", ActionRetainPublish, "topic/device/sample/configuration", clientCtx("device1"), Allowed},
				{"retain elsewhere", ActionRetainPublish, "topic/device/other", clientCtx("device1"), ImplicitDeny},
			},
		},
		{
			name: "connect with a retained will on topic will",
			page: "retained-message-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/*"],"Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["LastWill"]}}},
				{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/will"]}]}`,
			checks: []check{
				{"connect with a will", ActionConnect, "client/anyone", &Context{ClientID: "anyone", ConnectAttributes: []string{"LastWill"}, LastWillTopic: "will"}, Allowed},
				{"connect persistent", ActionConnect, "client/anyone", &Context{ClientID: "anyone", ConnectAttributes: []string{"PersistentConnect"}}, ImplicitDeny},
				{"retain the will", ActionRetainPublish, "topic/will", clientCtx("anyone"), Allowed},
				{"retain elsewhere", ActionRetainPublish, "topic/other", clientCtx("anyone"), ImplicitDeny},
			},
		},
		{
			name: "list and get retained messages",
			page: "retained-message-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:ListRetainedMessages"],"Resource":["*"]},
				{"Effect":"Allow","Action":["iot:GetRetainedMessage"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/foo"]}]}`,
			checks: []check{
				{"get foo", "iot:GetRetainedMessage", "topic/foo", client1, Allowed},
				{"get bar", "iot:GetRetainedMessage", "topic/bar", client1, ImplicitDeny},
				{"list", "iot:ListRetainedMessages", "topic/anything", client1, Allowed},
				{"publish not granted", ActionPublish, "topic/foo", client1, ImplicitDeny},
			},
		},
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			p := mustParse(t, ex.page, ex.doc)
			runChecks(t, NewSet(testEnv, p), ex.checks)
		})
	}
}

// TestCertificateExamples are certificate-policy-examples.md and
// cert-policy-variables.md, with real certificates.
func TestCertificateExamples(t *testing.T) {
	cnAdmin := testCert(t, attrs(oidCN, "device-1", "ops", "Administrator"))
	cnSingle := testCert(t, attrs(oidCN, "device-1"))
	cnAdminFirst := testCert(t, attrs(oidCN, "Administrator"))
	cnWild := testCert(t, attrs(oidCN, "dev*"))
	orgOK := testCert(t, append(attrs(oidCN, "d"), attrs(oidO, "Example Corp", "AnyCompany")...))
	orgBad := testCert(t, append(attrs(oidCN, "d"), attrs(oidO, "Example Corp", "Evil Inc")...))
	examples := []example{
		{
			name: "publish to the certificate ID",
			page: "certificate-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:CertificateId}"]},
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"]}]}`,
			checks: []check{
				{"own certificate ID", ActionPublish, "topic/0a1b2c", &Context{ClientID: "t", CertificateID: "0a1b2c"}, Allowed},
				{"another", ActionPublish, "topic/ffff", &Context{ClientID: "t", CertificateID: "0a1b2c"}, ImplicitDeny},
			},
		},
		{
			name: "publish to the subject common name",
			page: "certificate-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/${iot:Certificate.Subject.CommonName}"]}]}`,
			checks: []check{
				{"the first CN", ActionPublish, "topic/device-1", &Context{ClientID: "c", Certificate: cnSingle}, Allowed},
				{"another", ActionPublish, "topic/device-2", &Context{ClientID: "c", Certificate: cnSingle}, ImplicitDeny},
				{"no certificate", ActionPublish, "topic/device-1", &Context{ClientID: "c"}, ImplicitDeny},
				// cert-policy-variables.md: a wildcard in the attribute is not substituted.
				{"wildcard in CN is not substituted", ActionPublish, "topic/dev*", &Context{ClientID: "c", Certificate: cnWild}, ImplicitDeny},
			},
		},
		{
			name: "admin/* when Subject.CommonName.2 is Administrator",
			page: "certificate-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/admin/*"],
				 "Condition":{"StringEquals":{"iot:Certificate.Subject.CommonName.2":"Administrator"}}}]}`,
			checks: []check{
				{"third CN is Administrator", ActionPublish, "topic/admin/x", &Context{ClientID: "c", Certificate: cnAdmin}, Allowed},
				{"only one CN", ActionPublish, "topic/admin/x", &Context{ClientID: "c", Certificate: cnAdminFirst}, ImplicitDeny},
			},
		},
		{
			name: "admin/<thing> when any CN is Administrator (ForAnyValue .List)",
			page: "certificate-policy-examples.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/admin/${iot:Connection.Thing.ThingName}"],
				 "Condition":{"ForAnyValue:StringEquals":{"iot:Certificate.Subject.CommonName.List":"Administrator"}}}]}`,
			checks: []check{
				{"one of the CNs", ActionPublish, "topic/admin/t", &Context{ClientID: "t", Thing: &Thing{Name: "t"}, Certificate: cnAdmin}, Allowed},
				{"the only CN", ActionPublish, "topic/admin/t", &Context{ClientID: "t", Thing: &Thing{Name: "t"}, Certificate: cnAdminFirst}, Allowed},
				{"no Administrator", ActionPublish, "topic/admin/t", &Context{ClientID: "t", Thing: &Thing{Name: "t"}, Certificate: cnSingle}, ImplicitDeny},
			},
		},
		{
			name: "publish when every Organization is Example Corp or AnyCompany",
			page: "cert-policy-variables.md",
			doc: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:us-east-1:123456789012:client/client1"]},
				{"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/my/topic/${iot:ClientId}"],
				 "Condition":{"ForAllValues:StringEquals":{"iot:Certificate.Subject.Organization.List":["Example Corp","AnyCompany"]}}}]}`,
			checks: []check{
				{"both allowed organizations", ActionPublish, "topic/my/topic/client1", &Context{ClientID: "client1", Certificate: orgOK}, Allowed},
				{"one foreign organization", ActionPublish, "topic/my/topic/client1", &Context{ClientID: "client1", Certificate: orgBad}, ImplicitDeny},
			},
		},
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			runChecks(t, NewSet(testEnv, mustParse(t, ex.page, ex.doc)), ex.checks)
		})
	}
}

func TestCertificateVariables(t *testing.T) {
	cert := testCert(t, append(attrs(oidCN, "dev-1", "dev-1b"), attrs(oidO, "Acme")...))
	c := &Context{ClientID: "c", Certificate: cert}
	tests := []struct {
		variable string
		want     string
		ok       bool
	}{
		{"iot:Certificate.Subject.CommonName", "dev-1", true},
		{"iot:Certificate.Subject.CommonName.1", "dev-1b", true},
		{"iot:Certificate.Subject.CommonName.5", "", false},
		{"iot:Certificate.Subject.CommonName.List", "", false}, // a list is not a variable
		{"iot:certificate.subject.organization", "Acme", true}, // names are case-insensitive
		{"iot:Certificate.Subject.Country", "", false},
		{"iot:Certificate.Subject.AlternativeName.DNSName", "dev.example.com", true},
		{"iot:Certificate.SerialNumber", "4242", true},
		{"iot:Certificate.Issuer.Bogus", "", false},
	}
	for _, tt := range tests {
		r := parseRef(tt.variable, "${"+tt.variable+"}")
		got, ok := c.lookupVar(&r, &evalEnv{})
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tt.variable, got, ok, tt.want, tt.ok)
		}
	}
	ak := parseRef("iot:Certificate.AvailableKeys", "")
	keys, _ := c.values(&ak)
	for _, want := range []string{"iot:Certificate.Subject.CommonName", "iot:Certificate.Subject.Organization", "iot:Certificate.SerialNumber"} {
		if !slices.Contains(keys, want) {
			t.Errorf("AvailableKeys %v lacks %s", keys, want)
		}
	}
	// A certificate assembled in code (no parsed Names) still resolves.
	built := &Context{Certificate: &x509.Certificate{Subject: pkix.Name{CommonName: "built"}}}
	r := parseRef("iot:Certificate.Subject.CommonName", "")
	if v, ok := built.lookup(&r, nil); !ok || v != "built" {
		t.Errorf("built certificate CN: %q, %v", v, ok)
	}
}
