package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// TestProvisionDeviceLeavesNothingHalfDone: a device is written before it is registered, and a failed
// registration removes the files, so a failure leaves neither an ACTIVE certificate whose key is gone
// nor a key for a certificate that is not registered; existing files are never replaced.
func TestProvisionDeviceLeavesNothingHalfDone(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewAuthority(certs.AuthorityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := OpenRegistry(filepath.Join(dir, "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	req := NewDevice{Thing: Thing{Name: "sensor-1"}, KeyType: certs.ECDSAP256, Validity: time.Hour}
	out := filepath.Join(dir, "devices", "sensor-1")
	at := func(string) string { return out }

	d, got, err := ProvisionDevice(reg, ca, req, RefuseExisting, at, []byte("core CA"))
	if err != nil {
		t.Fatal(err)
	}
	if got != out || d.Certificate == nil || d.Certificate.ID != d.ID() || d.Certificate.Status != StatusActive {
		t.Fatalf("provisioned %+v in %s", d.Certificate, got)
	}
	if fi, err := os.Stat(filepath.Join(out, DeviceKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	key, _ := os.ReadFile(filepath.Join(out, DeviceKeyFile))

	// The registry cannot be written: the new device's files are removed, nothing is registered.
	lock := reg.Path() + ".lock"
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lock, 0o700); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "devices", "sensor-2")
	_, _, err = ProvisionDevice(reg, ca, NewDevice{Thing: Thing{Name: "sensor-2"}, KeyType: certs.ECDSAP256, Validity: time.Hour},
		RefuseExisting, func(string) string { return other }, []byte("core CA"))
	if err == nil || !strings.Contains(err.Error(), "files were removed") {
		t.Fatalf("a failed registration: %v", err)
	}
	for _, f := range []string{DeviceKeyFile, DeviceCertFile, CoreCAFile} {
		if _, err := os.Stat(filepath.Join(other, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind after a failed registration: %v", f, err)
		}
	}
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	if cs, _ := reg.CertificatesOf("sensor-2"); len(cs) != 0 {
		t.Fatalf("sensor-2 registered: %v", cs)
	}

	// Existing files are never replaced, even with ReplaceExisting; nothing is registered then.
	if _, _, err := ProvisionDevice(reg, ca, req, ReplaceExisting, at, []byte("core CA")); err == nil || !strings.Contains(err.Error(), "never overwrites") {
		t.Fatalf("overwrote a device's files: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(out, DeviceKeyFile)); string(after) != string(key) {
		t.Fatal("the key changed")
	}
	if cs, _ := reg.CertificatesOf("sensor-1"); len(cs) != 1 {
		t.Fatalf("sensor-1 has %d certificates, want 1", len(cs))
	}
	// A file created between the check and the write is not replaced either (link(2) refuses).
	if err := writeFileExclusive(filepath.Join(out, DeviceKeyFile), []byte("x"), 0o600); err == nil {
		t.Fatal("writeFileExclusive replaced a file")
	}
}
