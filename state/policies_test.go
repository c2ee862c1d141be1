package state

import (
	"os"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/config"
)

// TestBroadDefaultPolicyWarns: a fresh state directory gets the scoped default device policy and no
// warning about it; a state directory whose default policy file still has the broad statements of
// before issue 15 (ensureDefaultPolicy never overwrites a file) is warned about, naming the file and
// the fix; once the file is deleted, the next open writes the scoped one again.
func TestBroadDefaultPolicyWarns(t *testing.T) {
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	open := func() *State {
		t.Helper()
		st, err := OpenState(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	warned := func(st *State) bool {
		for _, w := range st.Warnings {
			if strings.Contains(w, "PublishReceiveOutsideAws") {
				return true
			}
		}
		return false
	}
	st := open()
	path := PolicyPath(st.PolicyDir, st.DefaultPolicy)
	if warned(st) {
		t.Fatalf("fresh state warned: %q", st.Warnings)
	}
	raw, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(raw), `topic/${iot:Connection.Thing.ThingName}/*`) || strings.Contains(string(raw), "NotResource") {
		t.Fatalf("default policy written: %v\n%s", err, raw)
	}
	broad := `{"Version":"2012-10-17","Statement":[
	 {"Sid":"ConnectWithOwnThingName","Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
	 {"Sid":"PublishReceiveOutsideAws","Effect":"Allow","Action":["iot:Publish","iot:Receive"],"NotResource":"arn:aws:iot:*:*:topic/$aws/*"}]}`
	if err := os.WriteFile(path, []byte(broad), 0o644); err != nil {
		t.Fatal(err)
	}
	st = open()
	if !warned(st) || !strings.Contains(strings.Join(st.Warnings, "\n"), path) {
		t.Fatalf("broad default policy not warned about: %q", st.Warnings)
	}
	if got, _ := os.ReadFile(path); string(got) != broad {
		t.Fatal("OpenState rewrote a policy file it must keep")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if st = open(); warned(st) {
		t.Fatalf("after deleting the file: %q", st.Warnings)
	}
	if raw, _ := os.ReadFile(path); strings.Contains(string(raw), "NotResource") {
		t.Fatalf("rewritten default policy is the broad one:\n%s", raw)
	}
}
