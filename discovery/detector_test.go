package discovery

import (
	"net/netip"
	"slices"
	"testing"
)

// fakeAddrs is one interface of each kind the IP detector distinguishes, plus a down interface.
var fakeAddrs = []InterfaceAddr{
	{Interface: "lo", Up: true, IP: netip.MustParseAddr("127.0.0.1")},
	{Interface: "lo", Up: true, IP: netip.MustParseAddr("::1")},
	{Interface: "eth0", Up: true, IP: netip.MustParseAddr("192.168.1.5")},
	{Interface: "eth0", Up: true, IP: netip.MustParseAddr("2001:db8::5")},
	{Interface: "eth0", Up: true, IP: netip.MustParseAddr("fe80::5")},
	{Interface: "eth1", Up: true, IP: netip.MustParseAddr("169.254.10.20")},
	{Interface: "eth1", Up: true, IP: netip.MustParseAddr("::ffff:10.0.0.7")}, // IPv4-mapped: counts as IPv4
	{Interface: "wlan0", Up: false, IP: netip.MustParseAddr("10.9.9.9")},
	{Interface: "eth2", Up: true, IP: netip.MustParseAddr("192.168.1.5")}, // same address twice: reported once
}

func TestDetectorFlags(t *testing.T) {
	tests := []struct {
		name  string
		flags DetectorFlags
		want  []string
	}{
		{"defaults: IPv4, no loopback, no link-local", DefaultDetectorFlags(),
			[]string{"192.168.1.5", "10.0.0.7"}},
		{"IPv4 with loopback", DetectorFlags{IncludeIPv4Addrs: true, IncludeIPv4LoopbackAddrs: true},
			[]string{"127.0.0.1", "192.168.1.5", "10.0.0.7"}},
		{"IPv4 with link-local", DetectorFlags{IncludeIPv4Addrs: true, IncludeIPv4LinkLocalAddrs: true},
			[]string{"192.168.1.5", "169.254.10.20", "10.0.0.7"}},
		{"IPv4 off: its loopback flag alone reports nothing", DetectorFlags{IncludeIPv4LoopbackAddrs: true},
			nil},
		{"IPv6 only", DetectorFlags{IncludeIPv6Addrs: true},
			[]string{"2001:db8::5"}},
		{"IPv6 with loopback", DetectorFlags{IncludeIPv6Addrs: true, IncludeIPv6LoopbackAddrs: true},
			[]string{"::1", "2001:db8::5"}},
		{"IPv6 link-local keeps its interface as zone", DetectorFlags{IncludeIPv6Addrs: true, IncludeIPv6LinkLocalAddrs: true},
			[]string{"2001:db8::5", "fe80::5%eth0"}},
		{"IPv6 off: its flags alone report nothing", DetectorFlags{IncludeIPv6LoopbackAddrs: true, IncludeIPv6LinkLocalAddrs: true},
			nil},
		{"everything", DetectorFlags{IncludeIPv4Addrs: true, IncludeIPv6Addrs: true, IncludeIPv4LoopbackAddrs: true,
			IncludeIPv6LoopbackAddrs: true, IncludeIPv4LinkLocalAddrs: true, IncludeIPv6LinkLocalAddrs: true},
			[]string{"127.0.0.1", "::1", "192.168.1.5", "2001:db8::5", "fe80::5%eth0", "169.254.10.20", "10.0.0.7"}},
		{"nothing", DetectorFlags{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, ip := range tt.flags.Detect(fakeAddrs) {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Detect = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSystemInterfaceAddrs(t *testing.T) {
	addrs, err := SystemInterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	// Every Linux box has a loopback interface; the detector with loopback on must find 127.0.0.1.
	found := DetectorFlags{IncludeIPv4Addrs: true, IncludeIPv4LoopbackAddrs: true}.Detect(addrs)
	if !slices.Contains(found, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("127.0.0.1 not detected among %v", addrs)
	}
	for _, ip := range DefaultDetectorFlags().Detect(addrs) {
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || !ip.Is4() {
			t.Errorf("default flags reported %s", ip)
		}
	}
}
