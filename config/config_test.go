package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ggbroker.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"stateDir", c.StateDir, "./ggbroker-data"},
		{"mqtt.listen", c.MQTT.Listen, ":8883"},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9883"},
		{"caType", c.ClientDeviceAuth.CertificateAuthority.CAType.First(), "ECDSA_P256"},
		{"serverCertificateValiditySeconds", c.ClientDeviceAuth.Certificates.ServerCertificateValiditySeconds, 604800},
		{"rotationMode", c.ClientDeviceAuth.Certificates.RotationMode, RotationHot},
		{"detectIPv4Addresses", c.Connectivity.DetectIPv4Addresses, true},
		{"source", c.Source, "embedded defaults"},
		{"limits.slowSubscriber", c.Limits.SlowSubscriber, SlowSubscriberBlock},
		{"limits.slowSubscriberWait", c.Limits.SlowSubscriberWait, time.Second},
		{"limits.trimMemoryAfterConnects", c.Limits.TrimMemoryAfterConnects, int64(500)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if len(c.Warnings) != 0 {
		t.Errorf("defaults gave warnings: %v", c.Warnings)
	}
}

// TestPrecedence: flags over environment over file over defaults.
func TestPrecedence(t *testing.T) {
	path := writeConfig(t, "mqtt:\n  listen: \":1001\"\nadmin:\n  listen: \"127.0.0.1:1002\"\nstateDir: /from/file\n")
	t.Setenv("GGBROKER_ADMIN_LISTEN", "127.0.0.1:2002")
	t.Setenv("GGBROKER_STATEDIR", "/from/env")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("state-dir", "", "")
	if err := fs.Parse([]string{"--state-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, map[string]*pflag.Flag{"stateDir": fs.Lookup("state-dir")})
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.Listen != ":1001" || c.Admin.Listen != "127.0.0.1:2002" || c.StateDir != "/from/flag" {
		t.Fatalf("got listen %q admin %q stateDir %q", c.MQTT.Listen, c.Admin.Listen, c.StateDir)
	}
	if c.Log.Level != "info" {
		t.Fatalf("a key the file does not set lost its default: log.level = %q", c.Log.Level)
	}
}

func TestCATypeAsGreengrassList(t *testing.T) {
	c, err := Load(writeConfig(t, "clientDeviceAuth:\n  certificateAuthority:\n    caType: [\"RSA_2048\"]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ClientDeviceAuth.CertificateAuthority.CAType.First(); got != "RSA_2048" {
		t.Fatalf("caType = %q", got)
	}
}

func TestValidityIsClampedWithWarning(t *testing.T) {
	for _, tc := range []struct {
		in, want int
	}{{10, 60}, {999999, 864000}, {3600, 3600}} {
		c, err := Load(writeConfig(t, "clientDeviceAuth:\n  certificates:\n    serverCertificateValiditySeconds: "+itoa(tc.in)+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ClientDeviceAuth.Certificates.ServerCertificateValiditySeconds; got != tc.want {
			t.Errorf("%d clamped to %d, want %d", tc.in, got, tc.want)
		}
		if warned := len(c.Warnings) > 0; warned != (tc.in != tc.want) {
			t.Errorf("%d: warnings %v", tc.in, c.Warnings)
		}
	}
}

// TestBadConfigNamesFileAndKey: a malformed config refuses to load, and the error says where.
func TestBadConfigNamesFileAndKey(t *testing.T) {
	cases := []struct {
		name, body string
		wants      []string
	}{
		{"unknown key", "mqtt:\n  lisen: \":1\"\n", []string{"'mqtt' has invalid keys: lisen"}},
		{"wrong type", "mqtt:\n  tlsHandshakeTimeout: soon\n", []string{"tlsHandshakeTimeout"}},
		{"bad rotation mode", "clientDeviceAuth:\n  certificates:\n    rotationMode: sometimes\n", []string{"clientDeviceAuth.certificates.rotationMode", "sometimes"}},
		{"bad caType", "clientDeviceAuth:\n  certificateAuthority:\n    caType: DSA\n", []string{"caType", "DSA"}},
		{"admin not loopback", "admin:\n  listen: \"0.0.0.0:9883\"\n", []string{"admin.listen", "loopback"}},
		{"half a BYO CA", "clientDeviceAuth:\n  certificateAuthority:\n    certificateUri: file:///ca.pem\n", []string{"privateKeyUri"}},
		{"bad listen", "mqtt:\n  listen: nowhere\n", []string{"mqtt.listen"}},
		{"not YAML", "mqtt: [\n", []string{"ggbroker.yaml"}},
		{"bad slowSubscriber", "limits:\n  slowSubscriber: wait\n", []string{"limits.slowSubscriber", "drop or block", "wait"}},
		{"block without a wait", "limits:\n  slowSubscriber: block\n  slowSubscriberWait: 0s\n", []string{"limits.slowSubscriberWait"}},
		{"negative trim threshold", "limits:\n  trimMemoryAfterConnects: -1\n", []string{"limits.trimMemoryAfterConnects"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := Load(path, nil)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range append(tc.wants, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, ":1": false, "10.0.0.1:1": false, "x": false} {
		if err := CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v", addr, err)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
