package advisor

import (
	"bytes"
	"testing"
)

// FuzzCodecRead: whatever a device sends, reading it returns a packet or an error, never a panic.
func FuzzCodecRead(f *testing.F) {
	f.Add([]byte{0x10, 20, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 30, 0, 2, 'c', '1', 0, 1, 'w', 0, 1, 'x', 0x32, 8, 0, 3, 'a', '/', 'b', 0, 7, 'z'})
	f.Add([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 30, 0, 0, 1, 'c', 0xc0, 0})
	f.Add([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 30, 0, 2, 'c'})
	f.Add([]byte{0x10, 3, 0, 9, 'M'})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &codec{r: bufioReader(bytes.NewReader(data)), w: &bytes.Buffer{}}
		for range 8 {
			if _, err := c.read(); err != nil {
				return
			}
		}
	})
}
