package profile

import (
	"testing"

	"github.com/ggbroker/ggbroker/config"
)

func TestSessionExpiry(t *testing.T) {
	iot, gg := profiles[IoTCore], profiles[Greengrass]
	cases := []struct {
		name      string
		p         Profile
		v5        bool
		requested uint32
		want      uint32
	}{
		{"3.1.1 on iot-core lives an hour", iot, false, 0, 3600},
		{"3.1.1 on greengrass lives to the ceiling", gg, false, 0, 604800},
		{"5 asks less than the ceiling", iot, true, 60, 60},
		{"5 asks more than the ceiling", iot, true, 1 << 30, 604800},
	}
	for _, tc := range cases {
		if got := tc.p.SessionExpiry(tc.v5, tc.requested, 604800); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		gone, now int64
		expiry    uint32
		want      bool
	}{{100, 100, 0, false}, {100, 101, 0, true}, {100, 110, 10, false}, {100, 111, 10, true}} {
		if got := SessionExpired(tc.gone, tc.now, tc.expiry); got != tc.want {
			t.Errorf("SessionExpired(%d, %d, %d) = %v", tc.gone, tc.now, tc.expiry, got)
		}
	}
}

func TestSharedSubscriptions(t *testing.T) {
	iot := profiles[IoTCore]
	for _, tc := range []struct {
		filter  string
		refused bool
	}{
		{"$share/g/sensors/#", false},
		{"$share/g/$aws/things/t/shadow/update/accepted", false},
		{"$share/g/$custom/x", true},
		{"$share//sensors/#", true},
		{"$share/g+/x", true},
		{"$custom/x", true},
	} {
		if got := iot.CheckReserved(tc.filter, true) != ""; got != tc.refused {
			t.Errorf("iot-core subscribe %q: refused %v, want %v", tc.filter, got, tc.refused)
		}
	}
	if why := iot.CheckTopic("$share/group/a/b/c/d/e/f/g/h"); why != "" {
		t.Errorf("the share prefix counted toward the levels: %s", why)
	}
}

// TestClientIDMustBeThing: Greengrass' rule in its profile, not in iot-core's, and the override
// behaviour.clientIdMustBeThing turns it either way.
func TestClientIDMustBeThing(t *testing.T) {
	for _, tc := range []struct {
		profile, override string
		want              bool
	}{
		{Greengrass, "", true},
		{IoTCore, "profile", false},
		{IoTCore, "true", true},
		{Greengrass, "false", false},
	} {
		p, err := FromConfig(config.Behaviour{Profile: tc.profile, ClientIDMustBeThing: tc.override})
		if err != nil {
			t.Fatal(err)
		}
		if p.ClientIDMustBeThing != tc.want {
			t.Errorf("%s with clientIdMustBeThing %q: %v, want %v", tc.profile, tc.override, p.ClientIDMustBeThing, tc.want)
		}
	}
	if _, err := FromConfig(config.Behaviour{Profile: IoTCore, ClientIDMustBeThing: "maybe"}); err == nil {
		t.Error("clientIdMustBeThing: maybe was accepted")
	}
}
