// Package mqttwire holds the small pieces of the MQTT wire format that ggbroker's own encoders (the
// bridge's PUBLISH and PUBACK, the advisor's test packets) share; mochi and paho have their own.
package mqttwire

// AppendVarint appends n as an MQTT Variable Byte Integer (MQTT 5 section 1.5.5; MQTT 3.1.1 section
// 2.2.3, the Remaining Length): seven bits per byte, least significant first, the high bit set on
// every byte but the last.
func AppendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// VarintLen is the number of bytes AppendVarint appends for n.
func VarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}
