package discovery

import (
	"net"
	"net/netip"
)

// DetectorFlags are the configuration of Greengrass' IP detector component
// (aws.greengrass.clientdevices.IPDetector, greengrass-v2/ip-detector-component.md, v2.2.x), with its
// names and defaults, so a component configuration can be copied over.
type DetectorFlags struct {
	IncludeIPv4Addrs          bool // default true
	IncludeIPv6Addrs          bool // default false
	IncludeIPv4LoopbackAddrs  bool // default false
	IncludeIPv6LoopbackAddrs  bool // default false
	IncludeIPv4LinkLocalAddrs bool // default false
	IncludeIPv6LinkLocalAddrs bool // default false
	// DefaultPort is the port reported with every detected address (Greengrass' default 8883). 0 means
	// the port the MQTT listener is bound to, which Greengrass cannot know and ggbroker does.
	DefaultPort int
}

// DefaultDetectorFlags are the IP detector's defaults.
func DefaultDetectorFlags() DetectorFlags {
	return DetectorFlags{IncludeIPv4Addrs: true, DefaultPort: 8883}
}

// InterfaceAddr is one address of a network interface, as the detector sees it.
type InterfaceAddr struct {
	Interface string // name, used as the zone of IPv6 link-local addresses
	Up        bool
	IP        netip.Addr
}

// SystemInterfaceAddrs lists this machine's interface addresses.
func SystemInterfaceAddrs() ([]InterfaceAddr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []InterfaceAddr
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue // an interface that went away between the two calls
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			addr, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			out = append(out, InterfaceAddr{Interface: ifc.Name, Up: ifc.Flags&net.FlagUp != 0, IP: addr.Unmap()})
		}
	}
	return out, nil
}

// Detect keeps the addresses the flags let through, in interface order, without duplicates. The rules
// are the IP detector's (IpDetector.getIpAddresses): interfaces that are down are skipped; an IPv6
// address needs includeIPv6Addrs, and its loopback (::1) and link-local (fe80::/10) kinds need their own
// flag too; an IPv4 address needs includeIPv4Addrs, and its loopback (127/8) and link-local
// (169.254/16) kinds their own flag. Each kind is checked on its own, so includeIPv4Addrs false with
// includeIPv4LoopbackAddrs true still reports nothing of IPv4, as in Greengrass. IPv6 link-local
// addresses keep their interface as zone (fe80::1%eth0): without it they cannot be dialled. Multicast
// and unspecified addresses, which no device could dial, are skipped too.
func (f DetectorFlags) Detect(addrs []InterfaceAddr) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !a.Up || !a.IP.IsValid() {
			continue
		}
		ip := a.IP.Unmap()
		if ip.Is4() {
			if !f.IncludeIPv4Addrs ||
				ip.IsLoopback() && !f.IncludeIPv4LoopbackAddrs ||
				ip.IsLinkLocalUnicast() && !f.IncludeIPv4LinkLocalAddrs {
				continue
			}
		} else {
			if !f.IncludeIPv6Addrs ||
				ip.IsLoopback() && !f.IncludeIPv6LoopbackAddrs ||
				ip.IsLinkLocalUnicast() && !f.IncludeIPv6LinkLocalAddrs {
				continue
			}
			if ip.IsLinkLocalUnicast() && a.Interface != "" {
				ip = ip.WithZone(a.Interface)
			}
		}
		if ip.IsMulticast() || ip.IsUnspecified() || seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, ip)
	}
	return out
}
