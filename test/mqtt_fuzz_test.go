package test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/config"
)

// FuzzPacketPath feeds arbitrary bytes to the MQTT packet path of the real broker, through the local
// listener, after a valid CONNECT (MQTT 3.1.1 or 5): whatever the bytes, the broker must not crash
// (a panic in a connection's goroutine ends the process, and with it this test) and must go on
// serving another client. The seeds, which `go test` runs without -fuzz, are packets that upset
// decoders: truncated fields, lengths past the end, unknown properties, repeated ones, wrong flags.
// Run the fuzzer with: go test ./test/ -run '^$' -fuzz FuzzPacketPath -fuzztime 60s
func FuzzPacketPath(f *testing.F) {
	for _, v := range []byte{4, 5} {
		for _, seed := range [][]byte{
			publishPacket(v, 1, false, "fuzz/t", 1, "x"),
			publishPacket(v, 2, true, "fuzz/t", 2, "x"),
			{pPublish<<4 | 0x02, 3, 0, 9, 'a'},                 // topic length past the end
			{pPublish<<4 | 0x06, 2, 0, 0},                      // QoS 3
			{pSubscribe<<4 | 0x02, 7, 0, 1, 0, 0, 2, 'a', 'b'}, // v5: no options byte after the filter
			{pSubscribe<<4 | 0x02, 2, 0, 1},                    // no filters
			subscribePacket(v, 3, props(propVarint(0x0b, 1<<28)), subFilter{"fuzz/#", 3}),
			subscribePacket(v, 4, props(propByte(0x01, 1)), subFilter{"$share//#", 0x2c}),
			{pUnsubscribe<<4 | 0x02, 2, 0, 5},
			{pPubrel<<4 | 0x02, 2, 0, 9},
			{pPubrec << 4, 3, 0, 1, 0x80},
			{pPuback << 4, 4, 0, 1, 0, 0xff},
			{pDisconnect << 4, 3, 0x04, 5, 0x11},          // properties past the end
			{pDisconnect << 4, 6, 0x00, 4, 0x11, 0, 0, 0}, // truncated Session Expiry
			{0xf0, 0}, // AUTH
			{pPingreq << 4, 0, pPingreq << 4, 1, 0},
			{pPublish << 4, 0xff, 0xff, 0xff, 0xff, 0x7f}, // remaining length over the maximum
			connectPacket(v, "again", true, 0),            // a second CONNECT
			publishPacket(v, 1, false, "", 5, "x", propU16(0x23, 0)),
			publishPacket(v, 0, false, "fuzz/t", 0, "x", propUser("k", "v"), propU32(0x02, 1), []byte{0x0b, 0x80, 0x80, 0x80, 0x80, 0x01}),
			{0x00, 0x00},
		} {
			f.Add(v == 5, seed)
		}
	}

	addr := startQuietLocalBroker(f)
	f.Fuzz(func(t *testing.T, v5 bool, data []byte) {
		v := byte(4)
		if v5 {
			v = 5
		}
		c := dialRawTo(t, addr, v)
		c.mustConnect("fuzz-client", true)
		if _, err := c.c.Write(data); err != nil {
			return // the broker may close the connection as soon as it sees a bad packet
		}
		for { // what the broker answers, until it closes the connection or goes quiet
			if _, err := c.readWithin(100 * time.Millisecond); err != nil {
				break
			}
		}
		_ = c.c.Close()

		other := dialRawTo(t, addr, 4)
		other.mustConnect("fuzz-witness", true)
		other.ping()
	})
}

// startQuietLocalBroker is startLocalBroker(allowAllPolicy) for a fuzz test: the harness writes the
// broker's warnings to the test log, which a fuzz target may not do from f (the broker logs from its
// own goroutines), so this one logs nowhere. It returns the local listener's address.
func startQuietLocalBroker(f *testing.F) string {
	f.Helper()
	cfg, err := config.Default()
	if err != nil {
		f.Fatal(err)
	}
	cfg.StateDir = f.TempDir()
	cfg.MQTT.Listen, cfg.Admin.Listen, cfg.Discovery.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.ControlPlane.Listen = "127.0.0.1:0" // not the default 9443: another process on the machine may hold it
	cfg.Connectivity.DetectIPv4Addresses = false
	cfg.Persistence.Enabled = false
	cfg.LocalListener = config.LocalListener{Enabled: true, Listen: "127.0.0.1:0", Anonymous: "local-raw", Policy: "local-raw"}
	if err := os.MkdirAll(cfg.PolicyDir(), 0o700); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.PolicyDir(), "local-raw.json"), []byte(allowAllPolicy), 0o600); err != nil {
		f.Fatal(err)
	}
	b, err := broker.New(cfg, zap.NewNop())
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			f.Error("broker did not shut down")
		}
	})
	select {
	case <-b.Ready():
	case err := <-done:
		f.Fatalf("broker stopped before it was ready: %v", err)
	case <-time.After(waitFor):
		f.Fatal("broker not ready")
	}
	return b.LocalAddr().String()
}
