package test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/audit"
)

// runAudit runs `ggbroker audit` in dir and returns its stdout and exit code.
func runAudit(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(ggbrokerBinary(t), append([]string{"audit"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func auditReport(t *testing.T, out string) *audit.Report {
	t.Helper()
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	return &rep
}

// TestAuditDefaultDevicePolicy audits a fresh state directory with one device on the default device
// policy: it must pass its own audit (issue 15). The default restricts iot:Connect to the thing name
// and topics to <thing>/..., so no overly-permissive probe (another device's topics, #, another's
// shadow or jobs, another client ID) is allowed. A widened default shows here; so does the old broad
// one, which the second half writes back to check that this test can fail.
func TestAuditDefaultDevicePolicy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run(t, dir, "device", "create", "d1")
	out, code := runAudit(t, dir, "--json")
	if code != 0 {
		t.Fatalf("exit %d, want 0 (the default device policy passes its own audit):\n%s", code, out)
	}
	rep := auditReport(t, out)
	if len(rep.Findings) != 0 {
		t.Fatalf("findings on a fresh state with the default device policy: %+v", rep.Findings)
	}
	var ran bool
	for _, c := range rep.Checks {
		if c.Name == audit.CheckPolicyOverlyPermissive {
			ran = c.Status == "COMPLETED_COMPLIANT" && c.Total >= 1
		}
	}
	if !ran {
		t.Fatalf("%s did not look at the default policy and find it compliant: %+v", audit.CheckPolicyOverlyPermissive, rep.Checks)
	}
	if text, code := runAudit(t, dir); code != 0 || !strings.Contains(text, "0 findings") {
		t.Fatalf("text report: exit %d\n%s", code, text)
	}

	// The broad policy the default was before issue 15 (every topic outside $aws/) is flagged,
	// naming the two statements and nothing about Connect.
	if err := os.WriteFile(filepath.Join(dir, "broad.json"), []byte(crossDevicePolicyDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "policy", "create", "ggbroker-default-device-policy", "broad.json", "--force")
	out, code = runAudit(t, dir, "--json")
	if code != 1 {
		t.Fatalf("broad policy: exit %d, want 1 (a CRITICAL finding at the default --fail-on high):\n%s", code, out)
	}
	rep = auditReport(t, out)
	if len(rep.Findings) != 1 {
		t.Fatalf("findings: %+v", rep.Findings)
	}
	f := rep.Findings[0]
	if f.Check != audit.CheckPolicyOverlyPermissive || f.Severity != audit.Critical || f.Resource.ID != "ggbroker-default-device-policy" {
		t.Fatalf("finding: %+v", f)
	}
	for _, want := range []string{`"PublishReceiveOutsideAws") lets thing d1 publish on another device's topics`, `"SubscribeOutsideAws") lets thing d1 subscribe to every topic`} {
		if !strings.Contains(f.Reason, want) {
			t.Errorf("reason lacks %q: %s", want, f.Reason)
		}
	}
	if strings.Contains(f.Reason, "iot:Connect") {
		t.Errorf("the policy restricts iot:Connect to the thing name, yet: %s", f.Reason)
	}
	if _, code := runAudit(t, dir, "--fail-on", "critical", "--json"); code != 1 {
		t.Errorf("--fail-on critical: exit %d, want 1", code)
	}
	if _, code := runAudit(t, dir, "--fail-on", "urgent"); code != 2 {
		t.Errorf("--fail-on urgent: exit %d, want 2", code)
	}
}

// TestAuditScopedFleetAndDuplicateClientIDs: a device on a scoped policy passes every check; then two
// connections with the same client ID to the real broker leave a DUPLICATE_CLIENT_ID record in its
// JSON log, which `audit --records` turns into a CONFLICTING_CLIENT_IDS_CHECK finding (HIGH).
func TestAuditScopedFleetAndDuplicateClientIDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	scoped := `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"}]}`
	if err := os.WriteFile(filepath.Join(dir, "scoped.json"), []byte(scoped), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "policy", "create", "scoped", "scoped.json")
	run(t, dir, "device", "create", "s1", "--out", "devices/s1", "--policy", "scoped")
	out, code := runAudit(t, dir)
	if code != 0 || !strings.Contains(out, "0 findings") || !strings.Contains(out, "CONFLICTING_CLIENT_IDS_CHECK") {
		t.Fatalf("scoped fleet: exit %d\n%s", code, out)
	}

	s := serve(t, dir)
	ep := fileEndpoint(t, s.mqtt, filepath.Join(dir, "devices/s1"))
	first := connectSession(t, ep, "s1", true, nil)
	defer first.Disconnect(0)
	second := connectSession(t, ep, "s1", true, nil)
	defer second.Disconnect(0)
	s.waitLog(t, `"reason":"DUPLICATE_CLIENT_ID"`)
	logFile := filepath.Join(dir, "broker.log")
	if err := os.WriteFile(logFile, []byte(s.stderr.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runAudit(t, dir, "--records", logFile, "--json")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	rep := auditReport(t, out)
	if len(rep.Findings) != 1 || rep.Findings[0].Check != audit.CheckConflictingClientIDs || rep.Findings[0].Severity != audit.High ||
		rep.Findings[0].Resource.ID != "s1" || rep.Findings[0].ReasonCode != "DUPLICATE_CLIENT_ID_ACROSS_CONNECTIONS" {
		t.Fatalf("findings: %+v", rep.Findings)
	}
	if _, code := runAudit(t, dir, "--records", logFile, "--fail-on", "critical"); code != 0 {
		t.Errorf("--fail-on critical with only a HIGH finding: exit %d, want 0", code)
	}
}
