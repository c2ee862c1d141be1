package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Endpoint is a manual connectivity entry (connectivity.endpoints[]), with the fields of Greengrass'
// UpdateConnectivityInfo. PortNumber 0 means the MQTT listener's port; an empty ID means the host address.
type Endpoint struct {
	ID          string `mapstructure:"id"`
	HostAddress string `mapstructure:"hostAddress"`
	PortNumber  int    `mapstructure:"portNumber"`
	Metadata    string `mapstructure:"metadata"`
}

// EffectiveID is the ID the entry is listed with.
func (e Endpoint) EffectiveID() string {
	if e.ID != "" {
		return e.ID
	}
	return e.HostAddress
}

// IPDetector holds the flags of Greengrass' IP detector component (connectivity.ipDetector), with its
// names, so its configuration can be copied over. connectivity.detectIPv4Addresses turns detection on.
type IPDetector struct {
	IncludeIPv4Addrs          bool `mapstructure:"includeIPv4Addrs"`
	IncludeIPv6Addrs          bool `mapstructure:"includeIPv6Addrs"`
	IncludeIPv4LoopbackAddrs  bool `mapstructure:"includeIPv4LoopbackAddrs"`
	IncludeIPv6LoopbackAddrs  bool `mapstructure:"includeIPv6LoopbackAddrs"`
	IncludeIPv4LinkLocalAddrs bool `mapstructure:"includeIPv4LinkLocalAddrs"`
	IncludeIPv6LinkLocalAddrs bool `mapstructure:"includeIPv6LinkLocalAddrs"`
	DefaultPort               int  `mapstructure:"defaultPort"`
}

// Discovery configures the offline Greengrass discovery API.
type Discovery struct {
	Enabled         bool     `mapstructure:"enabled"`
	Listen          string   `mapstructure:"listen"`
	ALPNListen      string   `mapstructure:"alpnListen"`
	HostNames       []string `mapstructure:"hostNames"`
	AWSEndpointName bool     `mapstructure:"awsEndpointName"`
	ClientDevices   []string `mapstructure:"clientDevices"`
}

// AWSDiscoveryEndpoint is the host name the AWS IoT Device SDKs call discovery on for the core's region
// (greengrass-ats.iot.REGION.amazonaws.com, greengrass-v2/greengrass-discover-api.md).
func (c *Config) AWSDiscoveryEndpoint() string {
	return "greengrass-ats.iot." + c.Core.Region + ".amazonaws.com"
}

// DiscoveryHostNames are the names the discovery server certificate carries besides the connectivity
// addresses: discovery.hostNames, and the AWS endpoint name when discovery.awsEndpointName is set.
func (c *Config) DiscoveryHostNames() []string {
	names := append([]string(nil), c.Discovery.HostNames...)
	if c.Discovery.AWSEndpointName {
		names = append(names, c.AWSDiscoveryEndpoint())
	}
	return names
}

// validHost reports whether s can be a host name or an IP address (IPv6 with a zone included).
func validHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return strings.TrimSpace(s) != "" && !strings.ContainsAny(s, " /:%")
}

func (c *Config) validateDiscovery(bad func(key, format string, args ...any)) {
	ids := map[string]int{}
	for i, e := range c.Connectivity.Endpoints {
		key := fmt.Sprintf("connectivity.endpoints[%d]", i)
		if !validHost(e.HostAddress) {
			bad(key+".hostAddress", "%q is not a host name or IP address", e.HostAddress)
		}
		if e.PortNumber < 0 || e.PortNumber > 65535 {
			bad(key+".portNumber", "%d is not a port (0 means the MQTT listener's port)", e.PortNumber)
		}
		if j, dup := ids[e.EffectiveID()]; dup {
			bad(key+".id", "%q is also the ID of connectivity.endpoints[%d] (the ID defaults to hostAddress)", e.EffectiveID(), j)
		}
		ids[e.EffectiveID()] = i
	}
	if p := c.Connectivity.IPDetector.DefaultPort; p < 0 || p > 65535 {
		bad("connectivity.ipDetector.defaultPort", "%d is not a port (0 means the MQTT listener's port)", p)
	}

	d := c.Discovery
	if !d.Enabled {
		return
	}
	if _, _, err := net.SplitHostPort(d.Listen); err != nil {
		bad("discovery.listen", "%q is not host:port: %v", d.Listen, err)
	}
	if d.ALPNListen != "" {
		if _, _, err := net.SplitHostPort(d.ALPNListen); err != nil {
			bad("discovery.alpnListen", "%q is not host:port (or empty, for no ALPN listener): %v", d.ALPNListen, err)
		}
	}
	for i, h := range d.HostNames {
		if !validHost(h) {
			bad(fmt.Sprintf("discovery.hostNames[%d]", i), "%q is not a host name or IP address", h)
		}
	}
	for i, p := range d.ClientDevices {
		if strings.TrimSpace(p) == "" {
			bad(fmt.Sprintf("discovery.clientDevices[%d]", i), "must not be empty (use \"*\" for every registered thing)")
		}
	}
}
