package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

func newTestRegistry(t *testing.T) (*Registry, *certs.Authority) {
	t.Helper()
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "test device CA", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	return reg, ca
}

func mustCreate(t *testing.T, reg *Registry, ca *certs.Authority, name string) (*Device, *x509.Certificate) {
	t.Helper()
	d, err := CreateDevice(reg, ca, NewDevice{Thing: Thing{Name: name, Attributes: map[string]string{"floor": "2"}}, KeyType: certs.ECDSAP256, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := certs.ParseCertsPEM(d.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return d, parsed[0]
}

func TestRegistryCreateAndStatus(t *testing.T) {
	reg, ca := newTestRegistry(t)
	d, _ := mustCreate(t, reg, ca, "sensor-1")
	mustCreate(t, reg, ca, "sensor-2")

	thing, ok, err := reg.Thing("sensor-1")
	if err != nil || !ok || thing.Attributes["floor"] != "2" {
		t.Fatalf("Thing: %+v %v %v", thing, ok, err)
	}
	if d.Certificate.ID != strings.ToLower(d.Certificate.ID) || len(d.Certificate.ID) != 64 {
		t.Fatalf("certificate ID %q is not a SHA-256 hex string", d.Certificate.ID)
	}
	cases := []struct {
		ref     string
		status  Status
		wantErr string
	}{
		{"sensor-1", StatusInactive, ""},
		{d.Certificate.ID[:10], StatusActive, ""},
		{d.Certificate.ID, StatusRevoked, ""},
		{"sensor-1", StatusActive, "a revoked certificate cannot be made ACTIVE again"},
		{d.Certificate.ID, StatusInactive, "a revoked certificate cannot be made INACTIVE again"},
		{"nobody", StatusRevoked, "no thing or certificate"},
		{"abc", StatusRevoked, "no thing or certificate"},
	}
	for _, tc := range cases {
		ids, err := reg.SetStatus(tc.ref, tc.status)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SetStatus(%q) err = %v, want %q", tc.ref, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(ids) != 1 || ids[0] != d.Certificate.ID {
			t.Fatalf("SetStatus(%q) = %v, %v", tc.ref, ids, err)
		}
		rec, _, _ := reg.Certificate(d.Certificate.ID)
		if rec.Status != tc.status {
			t.Fatalf("after SetStatus(%q): %s, want %s", tc.ref, rec.Status, tc.status)
		}
	}
	if m := fileMode(t, reg.Path()); m != 0o600 {
		t.Errorf("registry mode %o", m)
	}
}

// TestRegistrySeesOtherProcessWrites: a second Registry on the same file (another process: the CLI)
// changes a status, and the first sees it on its next read.
func TestRegistrySeesOtherProcessWrites(t *testing.T) {
	reg, ca := newTestRegistry(t)
	d, _ := mustCreate(t, reg, ca, "sensor-1")
	other, err := OpenRegistry(reg.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.SetStatus("sensor-1", StatusRevoked); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := reg.Certificate(d.Certificate.ID)
	if rec.Status != StatusRevoked {
		t.Fatalf("status %s, want REVOKED", rec.Status)
	}
}

// TestBrokenRegistryEditKeepsLastGood: a bad hand edit is reported and the last good version stays in force.
func TestBrokenRegistryEditKeepsLastGood(t *testing.T) {
	reg, ca := newTestRegistry(t)
	d, _ := mustCreate(t, reg, ca, "sensor-1")
	if rec, _, _ := reg.Certificate(d.Certificate.ID); rec == nil {
		t.Fatal("certificate not registered")
	}
	var reported error
	reg.OnReloadError = func(err error) { reported = err }
	if err := os.WriteFile(reg.Path(), []byte("{ not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, _, err := reg.Certificate(d.Certificate.ID)
	if err != nil || rec == nil {
		t.Fatalf("lost the registry after a bad edit: %v", err)
	}
	if reported == nil {
		t.Fatal("bad edit not reported")
	}
	if _, err := reg.SetStatus("sensor-1", StatusRevoked); err == nil {
		t.Fatal("an update over a broken file succeeded (it would have discarded the file)")
	}
}

func TestParseDataRefusesInconsistentRegistry(t *testing.T) {
	reg, ca := newTestRegistry(t)
	d, _ := mustCreate(t, reg, ca, "sensor-1")
	raw, err := os.ReadFile(reg.Path())
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"bad status":        strings.Replace(string(raw), `"ACTIVE"`, `"MAYBE"`, 1),
		"wrong ID":          strings.Replace(string(raw), `"certificateId": "`+d.Certificate.ID, `"certificateId": "00`+d.Certificate.ID[2:], 1),
		"unknown thing":     strings.Replace(string(raw), `"things": [`+"\n"+`        "sensor-1"`, `"things": [`+"\n"+`        "ghost"`, 1),
		"thing name key":    strings.Replace(string(raw), `"thingName": "sensor-1"`, `"thingName": "sensor-9"`, 1),
		"not a certificate": strings.Replace(string(raw), "BEGIN CERTIFICATE", "BEGIN NOTHING", 1),
	}
	for name, body := range cases {
		if body == string(raw) {
			t.Fatalf("%s: test edit did not apply", name)
		}
		if _, err := ParseData([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	reg, ca := newTestRegistry(t)
	_, good := mustCreate(t, reg, ca, "sensor-1")
	mustCreate(t, reg, ca, "sensor-2")
	now := time.Now()
	a := NewAuthenticator(reg, ca.Pool(), func() time.Time { return now })

	id, err := a.Authenticate([]*x509.Certificate{good}, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	if id.Thing.Name != "sensor-1" || id.CertificateID != certs.Fingerprint(good) {
		t.Fatalf("identity %+v", id)
	}

	later := NewAuthenticator(reg, ca.Pool(), func() time.Time { return now.Add(2 * time.Hour) })
	cases := []struct {
		name     string
		a        *Authenticator
		chain    []*x509.Certificate
		clientID string
		reason   string
		bad      bool
	}{
		{"no certificate", a, nil, "sensor-1", ReasonNoCertificate, true},
		{"expired", later, []*x509.Certificate{good}, "sensor-1", ReasonCertificateExpired, true},
		{"other thing", a, []*x509.Certificate{good}, "sensor-2", ReasonClientIDNotThing, false},
		{"no such thing", a, []*x509.Certificate{good}, "ghost", ReasonClientIDNotThing, false},
	}
	for _, tc := range cases {
		_, err := tc.a.Authenticate(tc.chain, tc.clientID)
		var r *Refusal
		if !errors.As(err, &r) || r.Reason != tc.reason || r.BadCredentials != tc.bad {
			t.Errorf("%s: err = %#v, want reason %s (bad credentials %v)", tc.name, err, tc.reason, tc.bad)
		}
	}
}

func TestCheckThingName(t *testing.T) {
	for name, ok := range map[string]bool{"sensor-1": true, "a:b_c": true, "": false, "has space": false, "x/y": false, strings.Repeat("a", 129): false} {
		if err := CheckThingName(name); (err == nil) != ok {
			t.Errorf("CheckThingName(%q) = %v", name, err)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCertificateByRef(t *testing.T) {
	reg, ca := newTestRegistry(t)
	d, _ := mustCreate(t, reg, ca, "sensor-1")
	id := d.Certificate.ID
	cases := []struct {
		ref string
		ok  bool
	}{{id, true}, {id[:8], true}, {id[:7], false}, {"sensor-1", false}, {"0000000000", false}}
	for _, tc := range cases {
		rec, cert, err := reg.CertificateByRef(tc.ref)
		if tc.ok != (err == nil) || tc.ok && (rec.ID != id || cert == nil) {
			t.Errorf("CertificateByRef(%q) = %v, %v", tc.ref, rec, err)
		}
	}
}

func TestCheckAttributes(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]string
		ok    bool
	}{
		{map[string]string{"floor": "2", "room": "a_b-c.d,e@f/g:h#i=j[k]"}, true},
		{map[string]string{"floor": "two words"}, false},
		{map[string]string{"bad key": "x"}, false},
		{map[string]string{"k": "é"}, false},
		{map[string]string{"": "x"}, false},
	} {
		if err := CheckAttributes(tc.attrs); (err == nil) != tc.ok {
			t.Errorf("CheckAttributes(%v) = %v, want ok=%v", tc.attrs, err, tc.ok)
		}
	}
}

// BenchmarkRegistryHeapPerDevice reports the live heap a loaded registry holds per registered device
// (B/device): the broker keeps it for as long as it runs, and every garbage collection marks it.
// Keeping each certificate parsed cost some 5 KB more per device.
func BenchmarkRegistryHeapPerDevice(b *testing.B) {
	const devices = 300
	path := filepath.Join(b.TempDir(), "registry.json")
	reg, err := OpenRegistry(path)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "bench device CA", KeyType: certs.ECDSAP256})
	if err != nil {
		b.Fatal(err)
	}
	for i := range devices {
		req := NewDevice{Thing: Thing{Name: fmt.Sprintf("sensor-%d", i)}, KeyType: certs.ECDSAP256, Validity: time.Hour}
		if _, err := CreateDevice(reg, ca, req); err != nil {
			b.Fatal(err)
		}
	}
	var perDevice float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		loaded, err := OpenRegistry(path)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perDevice = float64(after.HeapAlloc-before.HeapAlloc) / devices
		runtime.KeepAlive(loaded)
	}
	b.ReportMetric(perDevice, "B/device")
}
