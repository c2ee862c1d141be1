package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// BenchmarkFanIn measures broker throughput over real mTLS with real clients: 4 publishers, one
// subscriber on '#', every message authorized for publish and for receive. Run it with the policy
// engine and with the allow-all authorizer to see what the policy hooks cost:
//
//	go test -run '^$' -bench BenchmarkFanIn -benchtime 20000x ./test/
func BenchmarkFanIn(b *testing.B) {
	for _, mode := range []string{config.AuthzPolicies, config.AuthzAllowAll} {
		for _, qos := range []byte{0, 1} {
			b.Run(fmt.Sprintf("authz=%s/qos=%d", mode, qos), func(b *testing.B) { benchFanIn(b, mode, qos) })
		}
	}
}

func benchFanIn(b *testing.B, mode string, qos byte, mutate ...func(*config.Config)) {
	h := startBroker(b, func(c *config.Config) {
		c.Authorization.Mode = mode
		c.Log.Level = "warn"
		for _, m := range mutate {
			m(c)
		}
	})
	const pubs = 4
	var received atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	target := int64(b.N)
	sub := h.mustConnectV3(h.createDevice("bench-sub"))
	tok := sub.Subscribe("bench/#", qos, func(pahov3.Client, pahov3.Message) {
		if received.Add(1) == target {
			once.Do(func() { close(done) })
		}
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	clients := make([]pahov3.Client, pubs)
	for i := range clients {
		clients[i] = h.mustConnectV3(h.createDevice(fmt.Sprintf("bench-pub-%d", i)), func(o *pahov3.ClientOptions) {
			o.SetMaxResumePubInFlight(1000).SetWriteTimeout(waitFor)
		})
	}
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		n := b.N / pubs
		if i < b.N%pubs {
			n++
		}
		wg.Go(func() {
			topic := fmt.Sprintf("bench/%d/data", i)
			var last pahov3.Token
			for range n {
				last = c.Publish(topic, qos, false, payload)
			}
			if last != nil {
				last.WaitTimeout(time.Minute)
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := received.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(int64(b.N)-got)*100/float64(b.N), "loss%")
}

// BenchmarkConnect measures an mTLS MQTT connect (CONNECT, CONNACK, DISCONNECT) against a bare TLS
// handshake on the same listener, one at a time, with policies and persistence on (ggbroker's
// defaults). The client is in the same process, so B/op and allocs/op count both sides: the
// difference between the two is what the broker's MQTT path allocates per connect, and every byte of
// it is garbage a burst of connects makes the collector chase (issue 16's connects / handshakes goal).
//
//	go test -run '^$' -bench BenchmarkConnect -benchtime 2000x ./test/
func BenchmarkConnect(b *testing.B) {
	for _, kind := range []string{"handshake", "connect"} {
		b.Run("kind="+kind, func(b *testing.B) {
			h := startBroker(b, func(c *config.Config) { c.Log.Level = "warn" })
			d := h.createDevice("bench-conn")
			cfg := h.tlsConfig(d, nil)
			connect := packet(0x10, mqttString("MQTT"), []byte{4, 0x02, 0, 60}, mqttString(d.name))
			ack := make([]byte, 4)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				conn, err := tls.Dial("tcp", h.addr(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if kind == "connect" {
					if _, err := conn.Write(connect); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
						b.Fatalf("CONNACK % x: %v", ack, err)
					}
					if _, err := conn.Write([]byte{0xe0, 0}); err != nil {
						b.Fatal(err)
					}
				}
				conn.Close()
			}
		})
	}
}
