//go:build !race

// The race detector makes sync.Pool drop items on purpose, so allocation counts hold without it only.

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestDeliverQoS0DoesNotAllocate (patches: subscriberCache, copyForDelivery, pooled buffers):
// delivering a QoS 0 message to a subscriber allocates nothing per message, from the subscriber
// lookup to the socket write (pools may refill now and then, hence the bound below 1).
func TestDeliverQoS0DoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	res := testing.Benchmark(func(b *testing.B) {
		s, _ := deliverySetup(b, 1)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "bench/x", Payload: make([]byte, 64)}
		s.publishToSubscribers(pk) // warm the cache and the pools
		waitDelivered(b, s, 1)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s.publishToSubscribers(pk)
		}
		waitDelivered(b, s, int64(b.N)+1)
	})
	if per := float64(res.MemAllocs) / float64(res.N); per >= 0.5 {
		t.Fatalf("%.2f allocations per delivered message, want 0 (%s)", per, res.MemString())
	}
}
