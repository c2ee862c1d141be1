package config

import (
	"slices"
	"strings"
	"testing"
)

func TestDiscoveryDefaults(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	d := c.Discovery
	if !d.Enabled || d.Listen != ":8443" || d.ALPNListen != "" || !d.AWSEndpointName {
		t.Errorf("discovery defaults %+v", d)
	}
	if !slices.Equal(d.HostNames, []string{"localhost"}) || !slices.Equal(d.ClientDevices, []string{"*"}) {
		t.Errorf("discovery lists %v %v", d.HostNames, d.ClientDevices)
	}
	if got := c.DiscoveryHostNames(); !slices.Equal(got, []string{"localhost", "greengrass-ats.iot.us-east-1.amazonaws.com"}) {
		t.Errorf("DiscoveryHostNames %v", got)
	}
	// Greengrass' IP detector defaults (greengrass-v2/ip-detector-component.md).
	want := IPDetector{IncludeIPv4Addrs: true, DefaultPort: 8883}
	if c.Connectivity.IPDetector != want {
		t.Errorf("ipDetector %+v, want %+v", c.Connectivity.IPDetector, want)
	}
	if len(c.Connectivity.Endpoints) != 0 || !c.Connectivity.DetectIPv4Addresses {
		t.Errorf("connectivity %+v", c.Connectivity)
	}
}

func TestDiscoveryFromFileAndEnv(t *testing.T) {
	path := writeConfig(t, `
connectivity:
  endpoints:
    - hostAddress: gateway.local
      metadata: office
    - id: forwarded
      hostAddress: 203.0.113.9
      portNumber: 18883
  ipDetector:
    includeIPv6Addrs: true
    defaultPort: 0
discovery:
  alpnListen: ":443"
  clientDevices: [sensor-*, actuator-1]
`)
	t.Setenv("GGBROKER_DISCOVERY_LISTEN", "127.0.0.1:18443")
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{{HostAddress: "gateway.local", Metadata: "office"}, {ID: "forwarded", HostAddress: "203.0.113.9", PortNumber: 18883}}
	if !slices.Equal(c.Connectivity.Endpoints, want) {
		t.Errorf("endpoints %+v", c.Connectivity.Endpoints)
	}
	if d := c.Connectivity.IPDetector; !d.IncludeIPv4Addrs || !d.IncludeIPv6Addrs || d.DefaultPort != 0 {
		t.Errorf("ipDetector %+v (unset keys keep their defaults)", d)
	}
	if c.Discovery.Listen != "127.0.0.1:18443" || c.Discovery.ALPNListen != ":443" || !slices.Equal(c.Discovery.ClientDevices, []string{"sensor-*", "actuator-1"}) {
		t.Errorf("discovery %+v", c.Discovery)
	}
}

func TestDiscoveryValidation(t *testing.T) {
	tests := []struct {
		name, yaml, key string
	}{
		{"endpoint without host", "connectivity:\n  endpoints:\n    - portNumber: 1\n", "connectivity.endpoints[0].hostAddress"},
		{"endpoint host with a path", "connectivity:\n  endpoints:\n    - hostAddress: a/b\n", "connectivity.endpoints[0].hostAddress"},
		{"endpoint port", "connectivity:\n  endpoints:\n    - hostAddress: a\n      portNumber: 70000\n", "connectivity.endpoints[0].portNumber"},
		{"duplicate IDs", "connectivity:\n  endpoints:\n    - hostAddress: a\n    - hostAddress: b\n      id: a\n", "connectivity.endpoints[1].id"},
		{"unknown endpoint key", "connectivity:\n  endpoints:\n    - hostAddress: a\n      port: 1\n", "port"},
		{"defaultPort", "connectivity:\n  ipDetector:\n    defaultPort: -1\n", "connectivity.ipDetector.defaultPort"},
		{"listen", "discovery:\n  listen: nonsense\n", "discovery.listen"},
		{"alpnListen", "discovery:\n  alpnListen: \"443\"\n", "discovery.alpnListen"},
		{"host name", "discovery:\n  hostNames: [\"a b\"]\n", "discovery.hostNames[0]"},
		{"empty pattern", "discovery:\n  clientDevices: [\"\"]\n", "discovery.clientDevices[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, err := Load(path, nil)
			if err == nil || !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming %s and the file", err, tt.key)
			}
		})
	}
	// An IPv6 link-local endpoint with its zone is fine, and discovery off skips its own checks.
	path := writeConfig(t, "connectivity:\n  endpoints:\n    - hostAddress: \"fe80::1%eth0\"\ndiscovery:\n  enabled: false\n  listen: nonsense\n")
	if _, err := Load(path, nil); err != nil {
		t.Fatal(err)
	}
}
