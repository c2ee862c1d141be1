package jobs

import (
	"strings"
	"testing"
)

func TestParseTopic(t *testing.T) {
	cases := []struct {
		topic     string
		ok        bool
		api, job  string
		wantThing string
	}{
		{"$aws/things/t1/jobs/get", true, apiGetPending, "", "t1"},
		{"$aws/things/t1/jobs/start-next", true, apiStartNext, "", "t1"},
		{"$aws/things/t1/jobs/J1/get", true, apiDescribe, "J1", "t1"},
		{"$aws/things/t1/jobs/$next/get", true, apiDescribe, "$next", "t1"},
		{"$aws/things/t1/jobs/J1/update", true, apiUpdate, "J1", "t1"},
		{"$aws/things/t1/jobs/foo/bar/baz", true, "", "", "t1"},
		{"$aws/things/t1/jobs", true, "", "", "t1"},
		{"$aws/things/t1/jobs/get/accepted", false, "", "", ""},
		{"$aws/things/t1/jobs/J1/update/rejected", false, "", "", ""},
		{"$aws/things/t1/jobs/notify", false, "", "", ""},
		{"$aws/things/t1/jobs/notify-next", false, "", "", ""},
		{"$aws/things/t1/jobsx/get", false, "", "", ""},
		{"$aws/things/t1/shadow/get", false, "", "", ""},
	}
	for _, tc := range cases {
		r, ok := parseTopic(tc.topic)
		if ok != tc.ok || (ok && (r.api != tc.api || r.jobID != tc.job || r.thing != tc.wantThing)) {
			t.Errorf("%s: %+v %v, want api %q job %q thing %q ok %v", tc.topic, r, ok, tc.api, tc.job, tc.wantThing, tc.ok)
		}
	}
}

// TestEventRules: which changes publish notify and notify-next (J-MQTT; PY-JOBS walkthrough).
func TestEventRules(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	events := func(sent []sent) string {
		var out []string
		for _, s := range sent {
			if s.to == nil {
				out = append(out, strings.TrimPrefix(s.msg.Topic, "$aws/things/t1/jobs/"))
			}
		}
		return strings.Join(out, ",")
	}
	steps := []struct {
		name string
		do   func() []sent
		want string
	}{
		{"first job", func() []sent { f.create("J1", "t1"); return f.host.take() }, "notify,notify-next"},
		{"second job behind it", func() []sent { f.create("J2", "t1"); return f.host.take() }, "notify"},
		{"QUEUED to IN_PROGRESS", func() []sent { out, _ := f.request("J1/update", `{"status":"IN_PROGRESS"}`); return out }, ""},
		{"details only", func() []sent {
			out, _ := f.request("J1/update", `{"status":"IN_PROGRESS","statusDetails":{"a":"b"}}`)
			return out
		}, ""},
		{"refused update", func() []sent {
			out, _ := f.request("J1/update", `{"status":"IN_PROGRESS","expectedVersion":9}`)
			return out
		}, ""},
		{"start the second while the first runs", func() []sent { out, _ := f.request("J2/update", `{"status":"IN_PROGRESS"}`); return out }, ""},
		{"first done: next is the second", func() []sent { out, _ := f.request("J1/update", `{"status":"SUCCEEDED"}`); return out }, "notify,notify-next"},
		{"cancel another thing's job: its events only", func() []sent {
			f.create("J3", "t2")
			f.host.take()
			f.svc.CancelJob("J3", false, "", "")
			return f.host.take()
		}, "$aws/things/t2/jobs/notify,$aws/things/t2/jobs/notify-next"},
		{"force-cancel the running one", func() []sent { f.svc.CancelJob("J2", true, "", ""); return f.host.take() }, "notify,notify-next"},
	}
	for _, s := range steps {
		if got := events(s.do()); got != s.want {
			t.Fatalf("%s: events %q, want %q", s.name, got, s.want)
		}
	}
}
