// Package mqttwire holds the small pieces of the MQTT wire format that ggbroker's own encoders and
// decoders (the bridge's PUBLISH, PUBACK and packet readers, the advisor's test packets, ggbench's raw
// clients) share; mochi and paho have their own.
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

// ErrMalformedVarint is a Variable Byte Integer longer than four bytes.
var ErrMalformedVarint = errors.New("malformed remaining length")

// ReadVarint reads a Variable Byte Integer of at most four bytes, as AppendVarint writes it.
func ReadVarint(r io.ByteReader) (int, error) {
	var b [4]byte
	_, n, err := AppendVarintFrom(b[:0], r)
	return n, err
}

// AppendVarintFrom reads a Variable Byte Integer as ReadVarint does and also appends the bytes it
// read to dst, for readers that keep a packet's fixed header as it was sent.
func AppendVarintFrom(dst []byte, r io.ByteReader) ([]byte, int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return dst, 0, err
		}
		dst = append(dst, b)
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return dst, n, nil
		}
		mul *= 128
	}
	return dst, 0, ErrMalformedVarint
}

// ByteReader reads one byte at a time from r, never more: for reading a fixed header from a
// connection that is not buffered, where the bytes after it are read by someone else.
func ByteReader(r io.Reader) io.ByteReader { return byteReader{r} }

type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var c [1]byte
	_, err := io.ReadFull(b.r, c[:])
	return c[0], err
}
