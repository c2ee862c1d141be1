package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ggbroker/ggbroker/configs"
)

// FuzzLoad: whatever a config file holds, Load returns an error (naming the file) or a config that
// passes validation, and never panics. Seeds: testdata/fuzz/FuzzLoad, the embedded defaults and the
// minimal example.
//
//	go test -run '^$' -fuzz FuzzLoad -fuzztime 30s ./config/
func FuzzLoad(f *testing.F) {
	f.Add(configs.Default)
	if raw, err := os.ReadFile("../configs/minimal.yaml"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("limits:\n  maxPacketSize: 0\n"))
	f.Add([]byte("localListener:\n  enabled: true\n  listen: \"0.0.0.0:1883\"\n"))
	f.Add([]byte("clientDeviceAuth:\n  deviceGroups:\n    formatVersion: \"2021-03-05\"\n    definitions: {}\n"))
	f.Add([]byte("mqtt: [1, 2\n"))

	f.Fuzz(func(t *testing.T, raw []byte) {
		path := filepath.Join(t.TempDir(), "ggbroker.yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil)
		if err != nil {
			return
		}
		c.Warnings = nil
		if err := c.validate(); err != nil {
			t.Fatalf("Load accepted a config that does not validate: %v", err)
		}
	})
}
