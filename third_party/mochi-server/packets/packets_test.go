package packets

import (
	"errors"
	"strings"
	"testing"
)

// Tests of ggbroker's patches to the decoders (PATCHES.md).

func TestDecodersRefuseWhatTheyUsedToMisread(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  byte
		body []byte
		want error
		pk   func(*Packet) bool // what a correct decode gives
	}{
		{"v5 SUBSCRIBE filter without options byte (patch 18: read past the end)", Subscribe,
			[]byte{0, 1, 0, 0, 2, 'a', 'b'}, ErrMalformedQos, nil},
		{"Session Expiry twice (patch 17)", Disconnect,
			[]byte{0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2}, ErrProtocolViolationDuplicateProperty, nil},
		{"User Property twice is fine", Disconnect,
			[]byte{0, 14, 0x26, 0, 1, 'a', 0, 1, 'b', 0x26, 0, 1, 'a', 0, 1, 'c'}, nil,
			func(p *Packet) bool { return len(p.Properties.User) == 2 }},
		{"DISCONNECT of Remaining Length 1 (patch 14)", Disconnect,
			[]byte{0x04}, nil, func(p *Packet) bool { return p.ReasonCode == 0x04 }},
	} {
		pk := &Packet{ProtocolVersion: 5, FixedHeader: FixedHeader{Type: tc.typ, Remaining: len(tc.body)}}
		var err error
		switch tc.typ {
		case Subscribe:
			err = pk.SubscribeDecode(tc.body)
		case Disconnect:
			err = pk.DisconnectDecode(tc.body)
		}
		// the decoders wrap the last error only: look for the cause in the text
		if tc.want != nil && (err == nil || !errors.Is(err, tc.want) && !strings.Contains(err.Error(), tc.want.Error())) || tc.want == nil && err != nil {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
		if tc.pk != nil && !tc.pk(pk) {
			t.Errorf("%s: decoded %+v", tc.name, pk)
		}
	}
}
