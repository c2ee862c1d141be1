package test

import (
	"crypto/tls"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/bridge"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

// BenchmarkBridge measures bridged QoS 1 throughput, local broker -> upstream, with 4 or 16 local publishers
// over mutual TLS and one subscriber at the upstream (a ggbroker in the iot-core profile without its
// 100/s quota): ggbroker's bridge (every message fsynced to the spool before its PUBACK, unpaced
// upstream), and Mosquitto's own bridge to the same upstream (skipped without /usr/sbin/mosquitto):
//
//	go test -run '^$' -bench BenchmarkBridge -benchtime 10000x ./test/
func BenchmarkBridge(b *testing.B) {
	for _, pubs := range []int{4, 16} {
		b.Run(fmt.Sprintf("publishers=%d/ggbroker", pubs), func(b *testing.B) { benchBridgeGGBroker(b, pubs) })
		b.Run(fmt.Sprintf("publishers=%d/mosquitto", pubs), func(b *testing.B) { benchBridgeMosquitto(b, pubs) })
	}
}

func benchBridgeGGBroker(b *testing.B, publishers int) {
	up := startBroker(b, func(c *config.Config) {
		c.Behaviour.Profile, c.Behaviour.PublishesPerSecond, c.Log.Level = "iot-core", "0", "warn"
	})
	id := up.coreIdentity("gateway-bench")
	local := startBroker(b, func(c *config.Config) {
		c.Log.Level = "warn"
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Up": mapping("bench/#", bridge.LocalMqtt, bridge.IotCore, "")},
			"upstreamPublishesPerSecond": 0})
	})
	var pubs []pahov3.Client
	for i := range publishers {
		pubs = append(pubs, local.mustConnectV3(local.createDevice(fmt.Sprintf("bench-pub-%d", i)), func(o *pahov3.ClientOptions) {
			o.SetWriteTimeout(waitFor)
		}))
	}
	runBridgeBench(b, up, pubs, func() float64 { return local.metric("ggbroker_bridge_spool_messages") })
}

// runBridgeBench publishes b.N QoS 1 messages from pubs and waits for the upstream subscriber to have
// them all; it reports msgs/s end to end and the spool depth seen at the end of publishing.
func runBridgeBench(b *testing.B, up *harness, pubs []pahov3.Client, spoolDepth func() float64) {
	var received atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	target := int64(b.N)
	sub := up.mustConnectV3(up.createDevice("bench-sub"))
	if tok := sub.Subscribe("bench/#", 1, func(pahov3.Client, pahov3.Message) {
		if received.Add(1) >= target {
			once.Do(func() { close(done) })
		}
	}); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range pubs {
		n := b.N / len(pubs)
		if i < b.N%len(pubs) {
			n++
		}
		wg.Go(func() {
			topic := fmt.Sprintf("bench/%d/data", i)
			var last pahov3.Token
			for range n {
				last = c.Publish(topic, 1, false, payload)
			}
			if last != nil {
				last.WaitTimeout(time.Minute)
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	depth := spoolDepth()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := received.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/published.Seconds(), "acked-msgs/s")
	b.ReportMetric(depth, "spool-at-end")
	b.ReportMetric(float64(target-min(got, target))*100/float64(b.N), "loss%")
}

// benchBridgeMosquitto is the same load through Mosquitto's bridge: Mosquitto with a mutual-TLS
// listener for the publishers and a bridge (topic bench/# out 1, cleansession false, persistence on)
// to the same kind of upstream.
func benchBridgeMosquitto(b *testing.B, publishers int) {
	if _, err := exec.LookPath(mosquittoBin); err != nil {
		b.Skip("Mosquitto is not installed: " + mosquittoBin)
	}
	up := startBroker(b, func(c *config.Config) {
		c.Behaviour.Profile, c.Behaviour.PublishesPerSecond, c.Log.Level = "iot-core", "0", "warn"
	})
	id := up.coreIdentity("gateway-bench")
	dir := b.TempDir()
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "local test CA"})
	if err != nil {
		b.Fatal(err)
	}
	extra := fmt.Sprintf(`persistence true
persistence_location %s/
max_queued_messages 1000000
connection upstream
address %s
remote_clientid gateway-bench
cleansession false
try_private false
topic bench/# out 1
bridge_protocol_version mqttv50
bridge_cafile %s
bridge_certfile %s
bridge_keyfile %s
`, dir, upstreamEndpoint(up.addr()), id.ca, id.cert, id.key)
	m := startMosquittoWith(b, dir, ca, extra)
	var pubs []pahov3.Client
	for i := range publishers {
		name := fmt.Sprintf("bench-pub-%d", i)
		certPEM, keyPEM, _, err := ca.IssueClient(name, certs.ECDSAP256, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			b.Fatal(err)
		}
		pubs = append(pubs, connectFiles(b, m.addr, name, &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: ca.Pool(), ServerName: "localhost"}, true))
	}
	// Wait for the bridge's session at the upstream before measuring.
	deadline := time.Now().Add(waitFor)
	for up.metric("ggbroker_connected_clients") < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	runBridgeBench(b, up, pubs, func() float64 { return -1 })
}
