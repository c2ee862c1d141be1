package test

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/config"
)

// TestBinaryJobCommands: `ggbroker job` on a stopped broker's state directory, as a person runs it; the
// refusal while a broker serves the directory; and a job created by the CLI reaching the device once
// the broker runs.
func TestBinaryJobCommands(t *testing.T) {
	dir := t.TempDir()
	run(t, dir, "device", "create", "t1", "--out", "devices/t1")
	if err := os.WriteFile(filepath.Join(dir, "doc.json"), []byte(`{"ToDo":"Reboot"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, dir, "job", "create", "--thing", "t1", "--document", "doc.json", "--job-id", "Job1")
	if !strings.Contains(out, "created job Job1 (arn:aws:iot:") || !strings.Contains(out, "for t1") {
		t.Fatalf("create: %s", out)
	}
	run(t, dir, "job", "create", "--thing", "t1", "--document", "doc.json", "--job-id", "Job2")
	if out = run(t, dir, "job", "list"); !strings.Contains(out, "Job1") || !strings.Contains(out, "IN_PROGRESS") || !strings.Contains(out, "Job2") {
		t.Fatalf("list: %s", out)
	}
	if out = run(t, dir, "job", "describe", "Job1"); !strings.Contains(out, "status IN_PROGRESS, SNAPSHOT") || !strings.Contains(out, "QUEUED 1,") || !strings.Contains(out, "t1     1          QUEUED") {
		t.Fatalf("describe: %s", out)
	}
	if out = run(t, dir, "job", "cancel", "Job2"); !strings.Contains(out, "canceled job Job2") {
		t.Fatalf("cancel: %s", out)
	}
	for _, bad := range [][]string{
		{"job", "create", "--thing", "nope", "--document", "doc.json"},
		{"job", "create", "--thing", "t1", "--document", "missing.json"},
		{"job", "describe", "NoSuchJob"},
	} {
		cmd := exec.Command(ggbrokerBinary(t), bad...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "ggbroker:") {
			t.Fatalf("%v: %v %s, want a refusal", bad, err, b)
		}
	}

	// While a broker serves the directory, the CLI goes through its API (SigV4, the credentials file);
	// with controlPlane.listen on port 0 it needs --endpoint-url and says so.
	t.Setenv("GGBROKER_CONTROLPLANE_LISTEN", "127.0.0.1:0")
	s := serve(t, dir)
	api, _ := s.serving["api"].(string)
	cmd := exec.Command(ggbrokerBinary(t), "job", "list")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "in use by another ggbroker serve") || !strings.Contains(string(b), "--endpoint-url") {
		t.Fatalf("job list while serving, API on port 0: %v %s", err, b)
	}
	if api == "" {
		t.Fatalf("no api address in the serving record %v", s.serving)
	}
	ep := "--endpoint-url=https://" + api
	if out = run(t, dir, "job", ep, "create", "--thing", "t1", "--document", "doc.json", "--job-id", "Job3"); !strings.Contains(out, "created job Job3 (arn:aws:iot:") {
		t.Fatalf("create through the API: %s", out)
	}
	if out = run(t, dir, "job", ep, "list"); !strings.Contains(out, "Job1") || !strings.Contains(out, "Job3") || !strings.Contains(out, "CANCELED") {
		t.Fatalf("list through the API: %s", out)
	}
	if out = run(t, dir, "job", ep, "describe", "Job3"); !strings.Contains(out, "QUEUED 1,") || !strings.Contains(out, "t1     1          QUEUED") {
		t.Fatalf("describe through the API: %s", out)
	}
	if out = run(t, dir, "job", ep, "cancel", "Job3"); !strings.Contains(out, "canceled job Job3") {
		t.Fatalf("cancel through the API: %s", out)
	}
	s.terminate(t)

	// The broker serves the job created offline to the device.
	h := startBroker(t, func(c *config.Config) { c.StateDir = filepath.Join(dir, "ggbroker-data") })
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "devices/t1/device.pem.crt"), filepath.Join(dir, "devices/t1/private.pem.key"))
	if err != nil {
		t.Fatal(err)
	}
	dev := h.connectJobs(&device{name: "t1", cert: kp})
	dev.publish("$aws/things/t1/jobs/start-next", `{}`)
	if a := dev.expect("$aws/things/t1/jobs/start-next/accepted"); field(a, "execution", "jobId") != "Job1" || field(a, "execution", "jobDocument", "ToDo") != "Reboot" {
		t.Fatalf("start-next: %v", a)
	}
}
