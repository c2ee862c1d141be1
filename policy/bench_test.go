package policy

import (
	"fmt"
	"strings"
	"testing"
)

// benchPolicy builds an n-statement policy with variables, in the style of
// the AWS examples: connect as the thing, publish/subscribe/receive under
// the client ID, a few denies.
func benchPolicy(tb testing.TB, n int) *Policy {
	tb.Helper()
	const arn = "arn:aws:iot:us-east-1:123456789012:"
	base := []string{
		`{"Effect":"Allow","Action":"iot:Connect","Resource":"` + arn + `client/${iot:Connection.Thing.ThingName}"}`,
		`{"Effect":"Allow","Action":"iot:Publish","Resource":"` + arn + `topic/${iot:ClientId}/*"}`,
		`{"Effect":"Allow","Action":"iot:Subscribe","Resource":"` + arn + `topicfilter/${iot:ClientId}/*"}`,
		`{"Effect":"Allow","Action":"iot:Receive","Resource":"` + arn + `topic/shared/${iot:Connection.Thing.ThingName}/*"}`,
		`{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"` + arn + `topic/${iot:Connection.Thing.ThingName}/telemetry/*"}`,
		`{"Effect":"Deny","Action":"iot:Publish","Resource":"` + arn + `topic/${iot:ClientId}/admin/*"}`,
		`{"Effect":"Allow","Action":"iot:Subscribe","Resource":"` + arn + `topicfilter/broadcast/*"}`,
		`{"Effect":"Deny","Action":"iot:Receive","Resource":"` + arn + `topic/secret/*"}`,
		`{"Effect":"Allow","Action":"iot:Receive","Resource":["` + arn + `topic/broadcast/*","` + arn + `topic/${iot:ClientId}/*"]}`,
		`{"Effect":"Allow","Action":"iot:RetainPublish","Resource":"` + arn + `topic/${iot:ClientId}/state"}`,
	}
	var stmts []string
	for i := 0; i < n; i++ {
		if i < len(base) {
			stmts = append(stmts, base[i])
			continue
		}
		// Filler statements about other topics, with variables, so that a
		// 100-statement policy is 100 statements to look at.
		stmts = append(stmts, fmt.Sprintf(`{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"%stopic/app%d/${iot:ClientId}/*"}`, arn, i))
	}
	// Keep the matching statement last among the receive allows.
	if n > len(base) {
		stmts[8], stmts[n-1] = stmts[n-1], stmts[8]
	}
	doc := `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
	p, err := ParseDocument(fmt.Sprintf("bench%d", n), []byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func benchEvaluate(b *testing.B, n int) {
	set := NewSet(Env{Region: "us-east-1", AccountID: "123456789012"}, benchPolicy(b, n))
	ctx := &Context{ClientID: "sensor-1", Thing: &Thing{Name: "sensor-1"}}
	reqs := []Request{
		{Action: ActionReceive, Kind: KindTopic, Name: "sensor-1/data/temperature", Context: ctx},
		{Action: ActionPublish, Kind: KindTopic, Name: "sensor-1/data/temperature", Context: ctx},
	}
	for _, r := range reqs {
		if d, diag := set.Evaluate(r); d != Allowed {
			b.Fatalf("%s: %v %v", r.Action, d, diag)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, _ := set.Evaluate(reqs[i&1])
		if d != Allowed {
			b.Fatal(d)
		}
	}
}

// BenchmarkEvaluate10 is the broker's hot path: iot:Receive and iot:Publish
// on a topic, 10-statement policy with ${iot:ClientId} and
// ${iot:Connection.Thing.ThingName}. Goal: <= 300 ns, 0 allocs.
func BenchmarkEvaluate10(b *testing.B) { benchEvaluate(b, 10) }

// BenchmarkEvaluate100 is the same with 100 statements.
func BenchmarkEvaluate100(b *testing.B) { benchEvaluate(b, 100) }

// BenchmarkEvaluateImplicitDeny10 measures an implicit deny; it allocates
// only when a variable is unresolved (the Diagnostic lists it).
func BenchmarkEvaluateImplicitDeny10(b *testing.B) {
	set := NewSet(Env{Region: "us-east-1", AccountID: "123456789012"}, benchPolicy(b, 10))
	ctx := &Context{ClientID: "sensor-1", Thing: &Thing{Name: "sensor-1"}}
	req := Request{Action: ActionReceive, Kind: KindTopic, Name: "other/data", Context: ctx}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if d, _ := set.Evaluate(req); d != ImplicitDeny {
			b.Fatal(d)
		}
	}
}
