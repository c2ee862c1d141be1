package advisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/advisor/refdevice"
)

// fullSuite is every test case, configured for the reference devices.
func fullSuite(t *testing.T) Suite {
	t.Helper()
	s, err := TestsSuite("all", catalogueOrder())
	if err != nil {
		t.Fatal(err)
	}
	s.Configuration = Config{"TRIGGER_TOPIC": "ref/trigger", "PAYLOAD_FORMAT": `{"message":"${payload}"}`,
		"DESIRED_STATE": map[string]any{"led": "on"}, "JOB_DOCUMENT": `{"operation":"reboot"}`}
	for gi := range s.Groups {
		for ci, c := range s.Groups[gi].Cases {
			if c.TestID == "MQTT_Connect_Jitter_Backoff_Retries" { // two cycles of a 1 s backoff
				s.Groups[gi].Cases[ci].Configuration = Config{"EXECUTION_TIMEOUT": 10}
			}
		}
	}
	return s
}

func catalogueOrder() []string {
	var ids []string
	for _, d := range catalogue {
		ids = append(ids, d.id)
	}
	return ids
}

type want struct {
	status Status
	reason string // a substring of the reason
}

func runAgainst(t *testing.T, b refdevice.Behaviour) map[string]Result {
	t.Helper()
	f := newFixture(t, scopedPolicy)
	f.start(t, b)
	var lines []string
	opts := f.options()
	opts.Progress = func(p Progress) {
		lines = append(lines, string(p.Result.Status)+" "+p.Result.Name)
	}
	rep, err := Run(context.Background(), fullSuite(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	_ = rep.WriteTable(&table)
	t.Log("\n" + table.String())
	if rep.Refused == 0 {
		t.Error("no connection was refused between cases: the grace window did not refuse TLS")
	}
	if len(lines) != 2*len(catalogue) {
		t.Errorf("progress events: %d, want %d (start and end of each case)", len(lines), 2*len(catalogue))
	}
	out := map[string]Result{}
	for _, r := range rep.Results {
		out[r.TestID] = r
	}
	return out
}

func checkResults(t *testing.T, got map[string]Result, wants map[string]want) {
	t.Helper()
	for _, d := range catalogue {
		w, ok := wants[d.id]
		if !ok {
			w = want{status: StatusPass}
		}
		r := got[d.id]
		if r.Status != w.status || !strings.Contains(r.Reason(), w.reason) {
			t.Errorf("%s: %s %q, want %s containing %q\n  details: %s", d.id, r.Status, r.Reason(), w.status, w.reason, strings.Join(r.Details, "\n    "))
		}
	}
}

var serviceErrors = map[string]want{
	"Shadow_Publish_Reported_State": {StatusError, "service not available"},
	"Shadow_Update_Reported_State":  {StatusError, "service not available"},
	"Job_Execution":                 {StatusError, "service not available"},
}

func TestWellBehavedDevicePassesEveryCase(t *testing.T) {
	t.Parallel()
	got := runAgainst(t, refdevice.WellBehaved(20*time.Millisecond, 600*time.Millisecond))
	checkResults(t, got, serviceErrors)
	// Acceptance case 13: two cycles of six CONNECTs (12) before the verdict; case 14: five
	// reconnections timed with the default RECONNECTION_ATTEMPTS.
	jitter := strings.Join(got["MQTT_Connect_Jitter_Backoff_Retries"].Details, "\n")
	if strings.Count(jitter, "jitter backoff: delays") != 2 || !strings.Contains(jitter, "cycle 2:") {
		t.Errorf("jitter case details: %s", jitter)
	}
	for _, id := range []string{"MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect", "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection"} {
		d := strings.Join(got[id].Details, "\n")
		if _, rest, ok := strings.Cut(d, "delays "); !ok || strings.Count(strings.SplitN(rest, ", median", 2)[0], "s") != 5 {
			t.Errorf("%s: want 5 delays measured, details: %s", id, d)
		}
	}
}

func TestNaiveDeviceFailsWhatItShould(t *testing.T) {
	t.Parallel()
	wants := map[string]want{
		"TLS_Unsecure_Server_Cert":                              {StatusFail, "signed by an unknown CA: it does not verify the server"},
		"TLS_Incorrect_Subject_Name_Server_Cert":                {StatusFail, "for wrong.example only"},
		"TLS_Expired_Server_Cert":                               {StatusFail, "expired certificate"},
		"TLS_Support_AWS_IoT_Cipher_Suites":                     {StatusPassWithWarnings, "CHACHA20"},
		"TLS_Receive_Maximum_Size_Fragments":                    {StatusFail, "did not PUBACK the 16398-byte QoS 1 message"},
		"MQTT_Connect_Jitter_Backoff_Retries":                   {StatusFail, "constant delays"},
		"MQTT_Connect_Exponential_Backoff_Retries":              {StatusFail, "constant delays"},
		"MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect":   {StatusFail, "constant delays"},
		"MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection": {StatusFail, "constant delays"},
		"MQTT_Publish_Retry_No_Puback":                          {StatusFail, "new packet ID"},
		"MQTT_Subscribe_Retry_No_Suback":                        {StatusFail, "new packet ID"},
		"MQTT_Client_Puback_QoS1":                               {StatusFail, "did not PUBACK"},
		"MQTT_Persistent_Session_Happy_Case":                    {StatusFail, "subscribed to ref/trigger again"},
	}
	for k, v := range serviceErrors {
		wants[k] = v
	}
	got := runAgainst(t, refdevice.Naive(50*time.Millisecond))
	checkResults(t, got, wants)
}
