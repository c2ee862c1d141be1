package jobs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/service"
)

// FuzzDeviceRequest: any topic suffix and payload a device publishes is answered exactly once, on the
// request topic's accepted or rejected topic, with a JSON object, and never crashes the service.
func FuzzDeviceRequest(f *testing.F) {
	for _, seed := range []struct{ suffix, payload string }{
		{"get", `{"clientToken":"c"}`}, {"start-next", `{"statusDetails":{"a":"b"},"stepTimeoutInMinutes":5}`},
		{"J1/update", `{"status":"SUCCEEDED","expectedVersion":"1"}`}, {"$next/get", `{"includeJobDocument":false}`},
		{"J1/update", `{"status":"IN_PROGRESS","statusDetails":{"k":1}}`}, {"x/y/z", `{not json`}, {"J1/get", "\xff"},
		{"J1/update", `{"clientToken":5}`}, {"J1/update", `{"executionNumber":-3,"status":"FAILED"}`},
	} {
		f.Add(seed.suffix, seed.payload)
	}
	f.Fuzz(func(t *testing.T, suffix, payload string) {
		fx := startFixture(t, newMemStore(), nil)
		fx.create("J1", "t1")
		fx.host.take()
		topic := "$aws/things/t1/jobs/" + suffix
		_, isRequest := parseTopic(topic)
		err := fx.host.publish(context.Background(), &service.Message{Topic: topic, Payload: []byte(payload), QoS: 1, From: fx.dev})
		var answers []sent
		for _, s := range fx.host.take() {
			if s.to != nil {
				answers = append(answers, s)
			}
		}
		if !isRequest {
			if len(answers) != 0 || err != service.Consumed {
				t.Fatalf("%s: answered %v, %v", topic, answers, err)
			}
			return
		}
		if len(answers) != 1 {
			t.Fatalf("%s %q: %d answers", topic, payload, len(answers))
		}
		a := answers[0].msg
		if a.Topic != topic+"/accepted" && a.Topic != topic+"/rejected" {
			t.Fatalf("answer on %s", a.Topic)
		}
		var v map[string]any
		if err := json.Unmarshal(a.Payload, &v); err != nil || v["timestamp"] == nil {
			t.Fatalf("answer %s: %v", a.Payload, err)
		}
		if strings.HasSuffix(a.Topic, "/rejected") && v["code"] == nil {
			t.Fatalf("rejection without code: %s", a.Payload)
		}
	})
}
