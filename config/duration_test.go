package config

import (
	"strings"
	"testing"
	"time"
)

// TestDurationKeys: a duration is written with its unit; a bare number (which mapstructure would read
// as nanoseconds) is refused with the fix in the message, and values below the key's minimum are
// refused, naming the key. Issue 18: `mqtt.tlsHandshakeTimeout: 10` was 10 ns.
func TestDurationKeys(t *testing.T) {
	cases := []struct {
		name, file, env string
		want            time.Duration
		wantErr         []string
	}{
		{name: "default", want: 10 * time.Second},
		{name: "with unit", file: "mqtt:\n  tlsHandshakeTimeout: 3s\n", want: 3 * time.Second},
		{name: "milliseconds", file: "mqtt:\n  tlsHandshakeTimeout: 250ms\n", want: 250 * time.Millisecond},
		{name: "bare number", file: "mqtt:\n  tlsHandshakeTimeout: 10\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", `"10s"`, "bare number"}},
		{name: "bare float", file: "mqtt:\n  tlsHandshakeTimeout: 1.5\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", "bare number"}},
		{name: "quoted bare number", file: "mqtt:\n  tlsHandshakeTimeout: \"10\"\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", `"10s"`}},
		{name: "bare number from the environment", env: "10", wantErr: []string{"tlsHandshakeTimeout", `"10s"`}},
		{name: "not a duration", file: "mqtt:\n  tlsHandshakeTimeout: soon\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", "not a duration"}},
		{name: "below the minimum", file: "mqtt:\n  tlsHandshakeTimeout: 10ms\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", "below the minimum 100ms"}},
		{name: "nanoseconds", file: "mqtt:\n  tlsHandshakeTimeout: 10ns\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", "below the minimum"}},
		{name: "zero", file: "mqtt:\n  tlsHandshakeTimeout: 0s\n", wantErr: []string{"mqtt.tlsHandshakeTimeout", "below the minimum"}},
		{name: "negative", file: "mqtt:\n  tlsHandshakeTimeout: -5s\n", wantErr: []string{"mqtt.tlsHandshakeTimeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("GGBROKER_MQTT_TLSHANDSHAKETIMEOUT", tc.env)
			}
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			c, err := Load(path, nil)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("accepted: tlsHandshakeTimeout = %v", c.MQTT.TLSHandshakeTimeout)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not say %s: %v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MQTT.TLSHandshakeTimeout != tc.want {
				t.Fatalf("tlsHandshakeTimeout = %v, want %v", c.MQTT.TLSHandshakeTimeout, tc.want)
			}
		})
	}
}

// TestSectionDurations: a service's duration keys follow the same rules through Decode, with the
// service's key named, and a Go default kept when the file leaves the key out.
func TestSectionDurations(t *testing.T) {
	type svc struct {
		Interval time.Duration `mapstructure:"interval"`
		Timeout  time.Duration `mapstructure:"timeout" minDuration:"1s"`
		Retry    struct {
			Backoff []time.Duration `mapstructure:"backoff"`
		} `mapstructure:"retry"`
	}
	sec := Section{Key: "demo", Defaults: []byte("demo:\n  interval: 1m\n")}
	cases := []struct {
		name, file string
		env        string
		want       svc
		wantErr    []string
	}{
		{name: "defaults", want: svc{Interval: time.Minute, Timeout: 5 * time.Second}},
		{name: "file", file: "demo:\n  interval: 30s\n  timeout: 2s\n", want: svc{Interval: 30 * time.Second, Timeout: 2 * time.Second}},
		{name: "environment with unit", env: "45s", want: svc{Interval: 45 * time.Second, Timeout: 5 * time.Second}},
		{name: "bare number", file: "demo:\n  interval: 30\n", wantErr: []string{"demo", "interval", `"30s"`}},
		{name: "bare number from the environment", env: "30", wantErr: []string{"demo", "interval", `"30s"`}},
		{name: "below the key's minimum", file: "demo:\n  timeout: 500ms\n", wantErr: []string{"demo.timeout", "below the minimum 1s"}},
		{name: "nanoseconds", file: "demo:\n  interval: 5ns\n", wantErr: []string{"demo.interval", "unit mistake"}},
		{name: "zero is off", file: "demo:\n  interval: 0s\n", want: svc{Timeout: 5 * time.Second}},
		{name: "in a list", file: "demo:\n  retry:\n    backoff: [1s, 10]\n", wantErr: []string{"backoff", `"10s"`}},
		{name: "negative in a list", file: "demo:\n  retry:\n    backoff: [1s, -1s]\n", wantErr: []string{"demo.retry.backoff[1]", "negative"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("GGBROKER_DEMO_INTERVAL", tc.env)
			}
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			c, err := Load(path, nil, sec)
			if err != nil {
				t.Fatal(err)
			}
			got := svc{Timeout: 5 * time.Second}
			err = c.Decode("demo", &got)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not say %s: %v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Interval != tc.want.Interval || got.Timeout != tc.want.Timeout || len(got.Retry.Backoff) != 0 {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
