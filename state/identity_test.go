package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

// TestPartialIdentityRefused: a state directory that holds part of an identity is refused, naming what
// is missing, instead of silently making the missing part anew (issue 18: a deleted registry.json
// started an empty registry; a deleted ca/ made a new CA and every device's core-ca.pem useless).
func TestPartialIdentityRefused(t *testing.T) {
	cases := []struct {
		name   string
		remove []string // relative to the state directory, after a device was created
		want   []string // in the error; none: the start succeeds
	}{
		{name: "complete: a restart", want: nil},
		{name: "registry deleted", remove: []string{registryFile}, want: []string{"registry.json", "CERTIFICATE_NOT_REGISTERED", "echo '{}'"}},
		{name: "ca directory deleted", remove: []string{coreCADir}, want: []string{"core device CA", "core-ca.pem", "registry with 1 certificate"}},
		{name: "core CA deleted, server certificate kept", remove: []string{filepath.Join(coreCADir, coreCACertFile), filepath.Join(coreCADir, coreCAKeyFile)},
			want: []string{"core device CA (ca/core-ca.pem", "a server certificate (server/server.pem)"}},
		{name: "device CA deleted", remove: []string{filepath.Join(coreCADir, devCACertFile), filepath.Join(coreCADir, devCAKeyFile)},
			want: []string{"device CA (ca/device-ca.pem", "would not verify"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Default()
			if err != nil {
				t.Fatal(err)
			}
			cfg.StateDir = t.TempDir()
			st, err := OpenState(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Warnings) != 3 {
				t.Fatalf("a fresh state directory: want three warnings (core CA, device CA, registry), got %q", st.Warnings)
			}
			for _, w := range []string{"core-ca.pem", "device-ca.pem", "registry.json"} {
				if !strings.Contains(strings.Join(st.Warnings, "\n"), filepath.Join(cfg.StateDir, w)) && !strings.Contains(strings.Join(st.Warnings, "\n"), w) {
					t.Errorf("no warning names %s: %q", w, st.Warnings)
				}
			}
			if _, err := st.CreateDevice(auth.NewDevice{Thing: auth.Thing{Name: "sensor-1"}, KeyType: certs.ECDSAP256, Validity: time.Hour}); err != nil {
				t.Fatal(err)
			}
			serverCert, _ := st.ServerCertPaths()
			if err := os.MkdirAll(filepath.Dir(serverCert), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(serverCert, []byte("stand-in"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.remove {
				if err := os.RemoveAll(filepath.Join(cfg.StateDir, r)); err != nil {
					t.Fatal(err)
				}
			}
			again, err := OpenState(cfg)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if len(again.Warnings) != 0 {
					t.Fatalf("a restart warned: %q", again.Warnings)
				}
				return
			}
			if err == nil {
				t.Fatal("a partial identity was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			for _, r := range tc.remove {
				if r == coreCADir {
					r = filepath.Join(coreCADir, coreCACertFile)
				}
				if _, serr := os.Stat(filepath.Join(cfg.StateDir, r)); serr == nil {
					t.Errorf("%s was created again despite the refusal", r)
				}
			}
		})
	}
}
