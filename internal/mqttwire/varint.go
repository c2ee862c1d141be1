// Package mqttwire holds the small pieces of the MQTT wire format that ggbroker's own encoders (the
// bridge's PUBLISH and PUBACK, the advisor's test packets, ggbench's raw clients) share; mochi and paho have their own.
package mqttwire

import (
	"errors"
	"io"
)

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

// ReadVarint reads a Variable Byte Integer of at most four bytes, as AppendVarint writes it.
func ReadVarint(r io.ByteReader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, errors.New("malformed remaining length")
}
