package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSectionLayersLikeTheBroker: a service's block takes its embedded defaults, the file and the
// environment in the broker's precedence, and its unknown keys and wrong types are refused by key.
func TestSectionLayersLikeTheBroker(t *testing.T) {
	type spool struct {
		MaxMessages int    `mapstructure:"maxMessages"`
		Dir         string `mapstructure:"dir"`
	}
	type svc struct {
		Enabled bool  `mapstructure:"enabled"`
		Spool   spool `mapstructure:"spool"`
	}
	sec := Section{Key: "demo", Defaults: []byte("demo:\n  enabled: false\n  spool:\n    maxMessages: 10\n    dir: spool\n")}
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file, env, wantErr string
		want                     svc
	}{
		{name: "defaults", want: svc{Spool: spool{MaxMessages: 10, Dir: "spool"}}},
		{name: "file", file: "demo:\n  enabled: true\n  spool:\n    maxMessages: 5\n", want: svc{Enabled: true, Spool: spool{MaxMessages: 5, Dir: "spool"}}},
		{name: "env over file", file: "demo:\n  spool:\n    maxMessages: 5\n", env: "7", want: svc{Spool: spool{MaxMessages: 7, Dir: "spool"}}},
		{name: "unknown key", file: "demo:\n  spoool: 1\n", wantErr: "spoool"},
		{name: "wrong type", file: "demo:\n  spool:\n    maxMessages: many\n", wantErr: "maxmessages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("GGBROKER_DEMO_SPOOL_MAXMESSAGES", tc.env)
			}
			path := ""
			if tc.file != "" {
				path = write(tc.file)
			}
			c, err := Load(path, nil, sec)
			if err != nil {
				t.Fatal(err)
			}
			var got svc
			err = c.Decode("demo", &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) || !strings.Contains(err.Error(), "demo") {
					t.Fatalf("error %v, want one naming demo and %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := Load(write("nosuchservice:\n  x: 1\n"), nil, sec); err == nil || !strings.Contains(err.Error(), "nosuchservice") {
		t.Fatalf("unknown top-level key: %v", err)
	}
}
