package test

import (
	"fmt"
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
