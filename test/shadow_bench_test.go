package test

import (
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// BenchmarkShadowUpdate measures the Device Shadow round trip over mTLS with persistence on: 1 and 100
// devices each publish an update to their own shadow and wait for update/accepted (written to
// services.db, fsynced, before it is sent), b.N updates in all. For comparison, mode=qos1 does the
// same with a plain QoS 1 publish to a topic the device subscribes to (publish -> delivery back).
//
//	go test -run '^$' -bench BenchmarkShadowUpdate -benchtime 5000x ./test/
func BenchmarkShadowUpdate(b *testing.B) {
	for _, devices := range []int{1, 100} {
		for _, mode := range []string{"shadow", "qos1"} {
			b.Run(fmt.Sprintf("devices=%d/mode=%s", devices, mode), func(b *testing.B) { benchShadow(b, mode, devices) })
		}
	}
}

func benchShadow(b *testing.B, mode string, devices int) {
	h := startBroker(b, func(c *config.Config) {
		c.Log.Level = "warn"
		c.Persistence.Enabled = true
	})
	type dev struct {
		c      pahov3.Client
		topic  string
		answer chan struct{}
	}
	devs := make([]*dev, devices)
	for i := range devs {
		name := fmt.Sprintf("bench-shadow-%03d", i)
		c := h.mustConnectV3(h.createDevice(name), func(o *pahov3.ClientOptions) { o.SetWriteTimeout(waitFor) })
		d := &dev{c: c, answer: make(chan struct{}, 1)}
		sub := "$aws/things/" + name + "/shadow/update/accepted"
		d.topic = "$aws/things/" + name + "/shadow/update"
		if mode == "qos1" {
			sub, d.topic = name+"/echo", name+"/echo"
		}
		tok := c.Subscribe(sub, 1, func(pahov3.Client, pahov3.Message) { d.answer <- struct{}{} })
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		devs[i] = d
	}
	payload := []byte(`{"state":{"reported":{"temperature":21.5,"humidity":40}}}`)
	lat := make([][]time.Duration, devices)
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	var wg sync.WaitGroup
	for i, d := range devs {
		n := b.N / devices
		if i < b.N%devices {
			n++
		}
		wg.Go(func() {
			for range n {
				t0 := time.Now()
				d.c.Publish(d.topic, 1, false, payload)
				select {
				case <-d.answer:
				case <-time.After(waitFor):
					b.Errorf("device %d: no answer", i)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "updates/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-µs/update")
	b.ReportMetric(0, "ns/op")
}

// processCPU is the CPU time this process (broker and clients) has used. On a machine shared with
// other work, CPU per update varies far less than updates/s.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
