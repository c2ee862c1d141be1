package mqttwire

import (
	"bytes"
	"errors"
	"testing"
)

// TestAppendVarint: the examples of MQTT 5 section 1.5.5, at each length boundary.
func TestAppendVarint(t *testing.T) {
	cases := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0x80, 0x01}},
		{16383, []byte{0xff, 0x7f}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xff, 0xff, 0x7f}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{268435455, []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, c := range cases {
		got := AppendVarint([]byte{0xaa}, c.n)
		if !bytes.Equal(got[1:], c.want) || got[0] != 0xaa {
			t.Errorf("AppendVarint(%d) = % x, want % x after the prefix", c.n, got, c.want)
		}
		if l := VarintLen(c.n); l != len(c.want) {
			t.Errorf("VarintLen(%d) = %d, want %d", c.n, l, len(c.want))
		}
		if n, err := ReadVarint(bytes.NewReader(c.want)); err != nil || n != c.n {
			t.Errorf("ReadVarint(% x) = %d, %v, want %d", c.want, n, err, c.n)
		}
	}
	if _, err := ReadVarint(bytes.NewReader([]byte{0x80, 0x80, 0x80, 0x80, 0x01})); err == nil {
		t.Error("ReadVarint of five bytes: no error")
	}
	if _, err := ReadVarint(bytes.NewReader([]byte{0x80})); err == nil {
		t.Error("ReadVarint of a cut-off integer: no error")
	}
}

// TestAppendVarintFrom: the bytes read are appended as they were sent, and ByteReader reads no
// further than the integer.
func TestAppendVarintFrom(t *testing.T) {
	stream := append(AppendVarint([]byte{}, 16384), "rest"...)
	r := bytes.NewReader(stream)
	got, n, err := AppendVarintFrom([]byte{0x30}, ByteReader(r))
	if err != nil || n != 16384 || !bytes.Equal(got, append([]byte{0x30}, stream[:3]...)) {
		t.Fatalf("AppendVarintFrom = % x, %d, %v", got, n, err)
	}
	if r.Len() != len("rest") {
		t.Fatalf("%d bytes left after the integer, want %d", r.Len(), len("rest"))
	}
	if _, _, err := AppendVarintFrom(nil, bytes.NewReader([]byte{0x80, 0x80, 0x80, 0x80, 0x01})); !errors.Is(err, ErrMalformedVarint) {
		t.Fatalf("five bytes: %v, want ErrMalformedVarint", err)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = ReadVarint(bytes.NewReader(stream)) }); a > 1 {
		t.Errorf("ReadVarint allocates %.0f times (the reader aside)", a)
	}
}
