package awsapi

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	c, created, err := LoadOrCreateCredentials(path, Credentials{})
	if err != nil || !created {
		t.Fatalf("first start: %v created=%v", err, created)
	}
	if !regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`).MatchString(c.AccessKeyID) || len(c.SecretAccessKey) != 40 {
		t.Fatalf("keys of the wrong shape: %q", c.AccessKeyID)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v (%v), want 0600", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), "[ggbroker]\naws_access_key_id = "+c.AccessKeyID+"\n") {
		t.Fatalf("file:\n%s", raw)
	}
	again, created, err := LoadOrCreateCredentials(path, Credentials{})
	if err != nil || created || again != c {
		t.Fatalf("second start: %v created=%v same=%v", err, created, again == c)
	}
	fixed := Credentials{AccessKeyID: "AKIAFIXEDFIXEDFIXED0", SecretAccessKey: "fixed-secret"}
	got, created, err := LoadOrCreateCredentials(path, fixed)
	if err != nil || !created || got != fixed {
		t.Fatalf("fixed keys: %v", err)
	}
	if onDisk, err := ReadCredentials(path); err != nil || onDisk != fixed {
		t.Fatalf("file after fixed keys: %+v %v", onDisk, err)
	}
	if _, _, err := LoadOrCreateCredentials(path, Credentials{AccessKeyID: "AKIAONLYTHEID0000000"}); err == nil {
		t.Fatal("an access key without a secret accepted")
	}
	if err := os.WriteFile(path, []byte("[other]\naws_access_key_id = x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCredentials(path, Credentials{}); err == nil || !strings.Contains(err.Error(), "[ggbroker]") {
		t.Fatalf("file without the profile: %v", err)
	}
}
