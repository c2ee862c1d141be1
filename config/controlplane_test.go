package config

import (
	"strings"
	"testing"
)

func TestControlPlane(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if !c.ControlPlane.Enabled || c.ControlPlane.Listen != "127.0.0.1:9443" || c.ControlPlane.AccessKeyID != "" {
		t.Fatalf("defaults: %+v", c.ControlPlane)
	}
	cases := []struct {
		name, body, wantErr, wantWarning string
	}{
		{"fixed keys", "controlPlane:\n  accessKeyId: AKIAFIXEDFIXEDFIXED0\n  secretAccessKey: s3cr3t\n", "", ""},
		{"key without secret", "controlPlane:\n  accessKeyId: AKIAFIXEDFIXEDFIXED0\n", "controlPlane: accessKeyId and secretAccessKey go together", ""},
		{"short key", "controlPlane:\n  accessKeyId: AKIA\n  secretAccessKey: s\n", "controlPlane.accessKeyId", ""},
		{"not host:port", "controlPlane:\n  listen: \"9443\"\n", "controlPlane.listen", ""},
		{"off loopback", "controlPlane:\n  listen: \"0.0.0.0:9443\"\n", "", "controlPlane.listen"},
		{"disabled, listen not checked", "controlPlane:\n  enabled: false\n  listen: nonsense\n", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tc.body), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			warned := strings.Join(c.Warnings, "\n")
			if (tc.wantWarning == "") != (warned == "") || !strings.Contains(warned, tc.wantWarning) {
				t.Fatalf("warnings %q, want %q", warned, tc.wantWarning)
			}
		})
	}
}
