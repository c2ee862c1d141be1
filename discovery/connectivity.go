package discovery

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Endpoint is one entry of a core device's connectivity information: where a client device can reach
// the core's MQTT broker. Field names are the discovery API's (greengrass-v2/greengrass-discover-api.md,
// "Test the discovery API with cURL"), which are also UpdateConnectivityInfo's.
type Endpoint struct {
	ID          string `json:"Id"`
	HostAddress string `json:"HostAddress"`
	PortNumber  int    `json:"PortNumber"`
	Metadata    string `json:"Metadata"`
}

// ConnectivityConfig says where the core's connectivity information comes from.
type ConnectivityConfig struct {
	// HostAddresses are names and IPs that go into the server certificates only (connectivity.hostAddresses).
	HostAddresses []string
	// Endpoints are the manual entries, listed first in the discovery answer. PortNumber 0 means the MQTT
	// listener's port; an empty ID means the host address, as the IP detector writes IDs.
	Endpoints []Endpoint
	// Detect turns IP detection on; Detector says what it reports.
	Detect   bool
	Detector DetectorFlags
	// MQTTPort is the port the MQTT listener is bound to (known once it is bound).
	MQTTPort func() int
	// InterfaceAddrs lists the machine's addresses; nil means SystemInterfaceAddrs. Tests fake it.
	InterfaceAddrs func() ([]InterfaceAddr, error)
}

// Connectivity is the one source of truth for where devices reach this core: the discovery answer's
// Connectivity list and the subject alternative names of the server certificates both come from it, so
// a device that connects to an address discovery gave it can always verify the broker's certificate.
//
// Detection runs in Refresh (and Run, which calls it periodically); between two refreshes the answer
// and the names are stable, so a certificate issued from SANs and an answer given at the same time agree.
type Connectivity struct {
	cfg ConnectivityConfig

	mu       sync.RWMutex
	detected []netip.Addr
	// api, once set, replaces the configured manual entries: the core's connectivity information as
	// UpdateConnectivityInfo stored it (AWS' cloud copy, which discovery answers from).
	api *[]Endpoint
}

// NewConnectivity returns a Connectivity and runs a first detection. A detection error is returned
// together with a usable Connectivity (without detected addresses), so the caller may log and go on.
func NewConnectivity(cfg ConnectivityConfig) (*Connectivity, error) {
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = SystemInterfaceAddrs
	}
	if cfg.MQTTPort == nil {
		cfg.MQTTPort = func() int { return 8883 }
	}
	c := &Connectivity{cfg: cfg}
	_, err := c.Refresh()
	return c, err
}

// Refresh detects the machine's addresses now and reports whether they changed. On error the last
// detected addresses stay.
func (c *Connectivity) Refresh() (changed bool, err error) {
	if !c.cfg.Detect {
		return false, nil
	}
	addrs, err := c.cfg.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	ips := c.cfg.Detector.Detect(addrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(ips, c.detected) {
		return false, nil
	}
	c.detected = ips
	return true, nil
}

// Run calls Refresh every interval until ctx ends, calling onChange after a change and onError after a
// failed detection (either may be nil).
func (c *Connectivity) Run(ctx context.Context, every time.Duration, onChange func(), onError func(error)) {
	if !c.cfg.Detect {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := c.Refresh()
			if err != nil && onError != nil {
				onError(err)
			}
			if changed && onChange != nil {
				onChange()
			}
		}
	}
}

// Detected returns the addresses the last detection found.
func (c *Connectivity) Detected() []netip.Addr {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.detected)
}

// SetManual replaces the configured manual entries with the connectivity information set through
// the Greengrass API (UpdateConnectivityInfo replaces the whole list, as in AWS), and reports whether
// that changed them. Detected addresses are still added after them.
func (c *Connectivity) SetManual(endpoints []Endpoint) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil && slices.Equal(*c.api, endpoints) {
		return false
	}
	list := slices.Clone(endpoints)
	c.api = &list
	return true
}

// manual is the manual entries: those set through the API, else the configured ones.
func (c *Connectivity) manual() []Endpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.api != nil {
		return *c.api
	}
	return c.cfg.Endpoints
}

// Endpoints is the connectivity information the discovery API hands out: the manual entries (set
// through the API, else configured), then the detected addresses (each with the detector's port, ID =
// address, empty metadata, as the IP detector writes them).
func (c *Connectivity) Endpoints() []Endpoint {
	mqttPort := c.cfg.MQTTPort()
	configured := c.manual()
	manual := make([]Endpoint, len(configured))
	for i, e := range configured {
		if e.PortNumber == 0 {
			e.PortNumber = mqttPort
		}
		if e.ID == "" {
			e.ID = e.HostAddress
		}
		manual[i] = e
	}
	port := c.cfg.Detector.DefaultPort
	if port == 0 {
		port = mqttPort
	}
	var detected []Endpoint
	for _, ip := range c.Detected() {
		detected = append(detected, DetectedEndpoint(ip, port))
	}
	return MergeEndpoints(manual, detected)
}

// DetectedEndpoint is the entry the IP detector writes for an address: ID and host address are the
// address (ConnectivityUpdater.uploadAddresses), metadata is empty.
func DetectedEndpoint(ip netip.Addr, port int) Endpoint {
	s := ip.String()
	return Endpoint{ID: s, HostAddress: s, PortNumber: port, Metadata: ""}
}

// MergeEndpoints lists the manual entries first, then the detected ones. An entry whose ID is already
// listed is dropped: a manual entry for a detected address wins (it may carry another port or metadata).
// Greengrass' IP detector replaces manual entries instead; ggbroker keeps both, so a forwarded port or
// a DNS name can be listed next to what is detected.
func MergeEndpoints(manual, detected []Endpoint) []Endpoint {
	out := make([]Endpoint, 0, len(manual)+len(detected))
	seen := map[string]bool{}
	for _, list := range [][]Endpoint{manual, detected} {
		for _, e := range list {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// SANs are the subject alternative names a server certificate needs: localhost and 127.0.0.1 (always),
// the extra DNS names given, connectivity.hostAddresses, and the host address of every endpoint. It is
// the certs.RotatorConfig.SANs of the MQTT server certificate (no extra names) and, with the discovery
// host names, of the discovery server certificate.
func (c *Connectivity) SANs(extraDNS ...string) ([]string, []net.IP) {
	s := sanSet{}
	s.add("localhost")
	s.add("127.0.0.1")
	for _, h := range extraDNS {
		s.add(h)
	}
	for _, h := range c.cfg.HostAddresses {
		s.add(h)
	}
	for _, e := range c.Endpoints() {
		s.add(e.HostAddress)
	}
	return s.dns, s.ips
}

type sanSet struct {
	dns []string
	ips []net.IP
}

// add records a host name or IP address (an IPv6 zone is dropped: a certificate cannot carry it).
func (s *sanSet) add(host string) {
	host = strings.TrimSpace(host)
	if host == "" {
		return
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		nip := net.IP(ip.WithZone("").Unmap().AsSlice())
		if !slices.ContainsFunc(s.ips, nip.Equal) {
			s.ips = append(s.ips, nip)
		}
		return
	}
	if !slices.ContainsFunc(s.dns, func(d string) bool { return strings.EqualFold(d, host) }) {
		s.dns = append(s.dns, host)
	}
}
