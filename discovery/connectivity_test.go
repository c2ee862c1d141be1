package discovery

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
)

func TestMergeEndpoints(t *testing.T) {
	tests := []struct {
		name             string
		manual, detected []Endpoint
		wantIDs          []string
	}{
		{"none", nil, nil, []string{}},
		{"manual only, in order", []Endpoint{{ID: "b"}, {ID: "a"}}, nil, []string{"b", "a"}},
		{"detected only", nil, []Endpoint{{ID: "10.0.0.1"}, {ID: "10.0.0.2"}}, []string{"10.0.0.1", "10.0.0.2"}},
		{"manual first, then detected", []Endpoint{{ID: "gw.local"}}, []Endpoint{{ID: "10.0.0.1"}}, []string{"gw.local", "10.0.0.1"}},
		{"a manual entry for a detected address wins", []Endpoint{{ID: "10.0.0.1", PortNumber: 1883}},
			[]Endpoint{{ID: "10.0.0.1", PortNumber: 8883}, {ID: "10.0.0.2"}}, []string{"10.0.0.1", "10.0.0.2"}},
		{"duplicate manual IDs: the first stays", []Endpoint{{ID: "x", Metadata: "first"}, {ID: "x", Metadata: "second"}}, nil, []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MergeEndpoints(tt.manual, tt.detected)
			ids := []string{}
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("IDs %v, want %v", ids, tt.wantIDs)
			}
			if len(got) > 0 && len(tt.manual) > 0 && got[0] != tt.manual[0] {
				t.Errorf("first entry %+v, want the manual %+v", got[0], tt.manual[0])
			}
		})
	}
}

// fakeInterfaces is a changeable interface list.
type fakeInterfaces struct {
	addrs []InterfaceAddr
	err   error
}

func (f *fakeInterfaces) list() ([]InterfaceAddr, error) { return f.addrs, f.err }

func up(ip string) InterfaceAddr {
	return InterfaceAddr{Interface: "eth0", Up: true, IP: netip.MustParseAddr(ip)}
}

func TestConnectivityEndpointsAndSANs(t *testing.T) {
	ifs := &fakeInterfaces{addrs: []InterfaceAddr{up("127.0.0.1"), up("192.168.1.5")}}
	c, err := NewConnectivity(ConnectivityConfig{
		HostAddresses: []string{"gateway.local", "10.1.1.1"},
		Endpoints: []Endpoint{
			{HostAddress: "core.example.com", PortNumber: 0, Metadata: "through the router"},
			{ID: "forwarded", HostAddress: "203.0.113.9", PortNumber: 18883},
		},
		Detect:         true,
		Detector:       DetectorFlags{IncludeIPv4Addrs: true, DefaultPort: 0},
		MQTTPort:       func() int { return 41883 },
		InterfaceAddrs: ifs.list,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{ID: "core.example.com", HostAddress: "core.example.com", PortNumber: 41883, Metadata: "through the router"},
		{ID: "forwarded", HostAddress: "203.0.113.9", PortNumber: 18883, Metadata: ""},
		{ID: "192.168.1.5", HostAddress: "192.168.1.5", PortNumber: 41883, Metadata: ""},
	}
	if got := c.Endpoints(); !slices.Equal(got, want) {
		t.Fatalf("Endpoints\n got %+v\nwant %+v", got, want)
	}
	dns, ips := c.SANs("discovery.local")
	if wantDNS := []string{"localhost", "discovery.local", "gateway.local", "core.example.com"}; !slices.Equal(dns, wantDNS) {
		t.Errorf("DNS SANs %v, want %v", dns, wantDNS)
	}
	if got, want := ipStrings(ips), []string{"127.0.0.1", "10.1.1.1", "203.0.113.9", "192.168.1.5"}; !slices.Equal(got, want) {
		t.Errorf("IP SANs %v, want %v", got, want)
	}

	// An address change shows in both the answer and the names, once Refresh has run.
	ifs.addrs = []InterfaceAddr{up("192.168.1.6")}
	if _, ips := c.SANs(); slices.Contains(ipStrings(ips), "192.168.1.6") {
		t.Fatal("names changed before Refresh")
	}
	changed, err := c.Refresh()
	if err != nil || !changed {
		t.Fatalf("Refresh = %v, %v; want a change", changed, err)
	}
	if changed, _ := c.Refresh(); changed {
		t.Fatal("second Refresh reported a change")
	}
	_, ips = c.SANs()
	if got := ipStrings(ips); !slices.Contains(got, "192.168.1.6") || slices.Contains(got, "192.168.1.5") {
		t.Errorf("IP SANs after the change: %v", got)
	}
	if got := c.Endpoints(); got[len(got)-1].HostAddress != "192.168.1.6" {
		t.Errorf("endpoints after the change: %+v", got)
	}

	// A failed detection keeps the last addresses.
	ifs.err = errors.New("netlink gone")
	if _, err := c.Refresh(); err == nil {
		t.Fatal("Refresh hid the detection error")
	}
	if got := c.Detected(); len(got) != 1 || got[0].String() != "192.168.1.6" {
		t.Errorf("detected after a failed refresh: %v", got)
	}
}

func TestConnectivityDetectionOff(t *testing.T) {
	called := false
	c, err := NewConnectivity(ConnectivityConfig{
		Detector:       DefaultDetectorFlags(),
		InterfaceAddrs: func() ([]InterfaceAddr, error) { called = true; return []InterfaceAddr{up("192.168.1.5")}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if called || len(c.Endpoints()) != 0 {
		t.Fatalf("detection ran while off: %+v", c.Endpoints())
	}
	dns, ips := c.SANs()
	if !slices.Equal(dns, []string{"localhost"}) || !slices.Equal(ipStrings(ips), []string{"127.0.0.1"}) {
		t.Errorf("SANs %v %v, want localhost and 127.0.0.1 only", dns, ips)
	}
}

func TestSANsOfIPv6(t *testing.T) {
	c, _ := NewConnectivity(ConnectivityConfig{Endpoints: []Endpoint{{HostAddress: "fe80::5%eth0"}, {HostAddress: "2001:db8::5"}}})
	_, ips := c.SANs()
	if got, want := ipStrings(ips), []string{"127.0.0.1", "fe80::5", "2001:db8::5"}; !slices.Equal(got, want) {
		t.Errorf("IP SANs %v, want %v (zone dropped)", got, want)
	}
}

func TestMatchAny(t *testing.T) {
	tests := []struct {
		patterns []string
		name     string
		want     bool
	}{
		{[]string{"*"}, "anything", true},
		{[]string{"sensor-1"}, "sensor-1", true},
		{[]string{"sensor-1"}, "sensor-10", false},
		{[]string{"sensor-*"}, "sensor-10", true},
		{[]string{"sensor-*"}, "actuator-1", false},
		{[]string{"*-kitchen"}, "sensor-kitchen", true},
		{[]string{"a*b*c"}, "a-x-b-y-c", true},
		{[]string{"a*b*c"}, "a-x-c", false},
		{[]string{"ab*b"}, "ab", false},
		{[]string{"other", "sensor-*"}, "sensor-2", true},
		{nil, "sensor-1", false},
	}
	for _, tt := range tests {
		if got := MatchAny(tt.patterns, tt.name); got != tt.want {
			t.Errorf("MatchAny(%v, %q) = %v, want %v", tt.patterns, tt.name, got, tt.want)
		}
	}
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// TestSetManual: connectivity set through the API replaces the configured entries (in the answer and
// the certificate names), reports a change only when the list differs, and keeps port 0 meaning the
// MQTT listener's port.
func TestSetManual(t *testing.T) {
	c, err := NewConnectivity(ConnectivityConfig{Endpoints: []Endpoint{{HostAddress: "gw.local"}}, MQTTPort: func() int { return 8883 }})
	if err != nil {
		t.Fatal(err)
	}
	api := []Endpoint{{ID: "a", HostAddress: "10.0.0.5", PortNumber: 1883}, {ID: "b", HostAddress: "core.example"}}
	if !c.SetManual(api) {
		t.Fatal("the first SetManual reported no change")
	}
	if c.SetManual(slices.Clone(api)) {
		t.Error("the same list again reported a change")
	}
	want := []Endpoint{{ID: "a", HostAddress: "10.0.0.5", PortNumber: 1883}, {ID: "b", HostAddress: "core.example", PortNumber: 8883}}
	if got := c.Endpoints(); !slices.Equal(got, want) {
		t.Fatalf("Endpoints %+v, want %+v", got, want)
	}
	dns, ips := c.SANs()
	if slices.Contains(dns, "gw.local") || !slices.Contains(dns, "core.example") || !slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.String() == "10.0.0.5" }) {
		t.Errorf("SANs %v %v: want the API's host addresses instead of the configured one", dns, ips)
	}
}
