package mqtt

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Tests of ggbroker's patches (PATCHES.md), against the server's own functions.

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { close(s.done) })
	return s
}

// newTestClient is a connected MQTT 5 client whose packets the test reads from the returned conn.
func newTestClient(t *testing.T, s *Server, id string) (*Client, net.Conn) {
	t.Helper()
	c, r := net.Pipe()
	t.Cleanup(func() { c.Close(); r.Close() })
	cl := s.NewClient(c, "t", id, false)
	cl.Properties.ProtocolVersion = 5
	s.Clients.Add(cl)
	return cl, r
}

// drain reads and discards what is written to conn until it closes.
func drain(conn net.Conn) { _, _ = io.Copy(io.Discard, conn) }

// aclRecorder records the ACL questions it is asked and allows everything.
type aclRecorder struct {
	HookBase
	filterHook bool // provides OnSubscribeACLCheck
	mu         sync.Mutex
	reads      []string
	filters    []string
}

func (h *aclRecorder) ID() string { return "acl-recorder" }
func (h *aclRecorder) Provides(b byte) bool {
	return b == OnACLCheck || b == OnSubscribeACLCheck && h.filterHook
}
func (h *aclRecorder) OnACLCheck(_ *Client, topic string, write bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !write {
		h.reads = append(h.reads, topic)
	}
	return true
}
func (h *aclRecorder) OnSubscribeACLCheck(_ *Client, filter string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.filters = append(h.filters, filter)
	return true
}

// TestSubscribeFilterCheckIsNotADeliveryCheck (patch 6): a SUBSCRIBE's filters are asked of
// OnSubscribeACLCheck, never of OnACLCheck(read), which is then only a delivery check; a hook that
// does not provide OnSubscribeACLCheck is still asked OnACLCheck(filter, false), as upstream did.
func TestSubscribeFilterCheckIsNotADeliveryCheck(t *testing.T) {
	for _, filterHook := range []bool{true, false} {
		s := newTestServer(t)
		h := &aclRecorder{filterHook: filterHook}
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
		cl, conn := newTestClient(t, s, "c1")
		go drain(conn)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "a/b", Qos: 1}, {Filter: "c/#", Qos: 1}}}
		if err := s.processSubscribe(cl, pk); err != nil {
			t.Fatal(err)
		}
		if filterHook {
			if len(h.reads) != 0 || len(h.filters) != 2 {
				t.Errorf("with OnSubscribeACLCheck: filters %v, reads %v; want 2 filters and no reads", h.filters, h.reads)
			}
		} else if len(h.reads) != 2 {
			t.Errorf("without OnSubscribeACLCheck: reads %v, want the 2 filters", h.reads)
		}
	}
}

// TestOnlyMessagesWithAnExpiryExpire (patch 10): a day and more after they were published, a retained
// message and a queued message without a Message Expiry Interval are still there, and so is a QoS 2
// acknowledgement's state with MaximumMessageExpiryInterval 0; messages whose publisher set an
// interval expire after it, capped by the maximum.
func TestOnlyMessagesWithAnExpiryExpire(t *testing.T) {
	for _, max := range []int64{86400, 0} {
		s := newTestServer(t)
		s.Options.Capabilities.MaximumMessageExpiryInterval = max
		cl, _ := newTestClient(t, s, "c1")
		now := time.Now().Unix()
		msg := func(topic string, interval uint32, id uint16) packets.Packet {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
				TopicName: topic, Payload: []byte("x"), PacketID: id, Created: now, ProtocolVersion: 5}
			pk.Properties.MessageExpiryInterval = interval
			pk.Expiry = s.messageExpiry(pk)
			return pk
		}
		forever, brief := msg("t/forever", 0, 1), msg("t/brief", 10, 2)
		if forever.Expiry != 0 || brief.Expiry != now+10 {
			t.Fatalf("max %d: expiry %d and %d, want 0 and now+10", max, forever.Expiry, brief.Expiry)
		}
		if long := msg("t/long", 1<<30, 3); max > 0 && long.Expiry != now+max {
			t.Errorf("max %d: expiry of a 2^30 s interval is now+%d, want the maximum", max, long.Expiry-now)
		}
		for _, pk := range []packets.Packet{forever, brief} {
			s.Topics.RetainMessage(pk)
			cl.State.Inflight.Set(pk)
		}
		cl.State.Inflight.Set(s.buildAck(7, packets.Pubrec, 0, packets.Properties{}, packets.CodeSuccess))

		later := now + 2*86400
		if max > 0 {
			later = now + max/2 // the ack's QoS 2 state still lives
		}
		s.clearExpiredRetainedMessages(later)
		s.clearExpiredInflights(later)
		if s.Topics.Retained.Len() != 1 {
			t.Errorf("max %d: %d retained messages left, want t/forever only", max, s.Topics.Retained.Len())
		} else if _, ok := s.Topics.Retained.GetAll()["t/forever"]; !ok {
			t.Errorf("max %d: retained %v, want t/forever", max, s.Topics.Retained.GetAll())
		}
		if _, ok := cl.State.Inflight.Get(1); !ok {
			t.Errorf("max %d: the queued message without expiry expired", max)
		}
		if _, ok := cl.State.Inflight.Get(2); ok {
			t.Errorf("max %d: the queued message with a 10 s expiry is still there", max)
		}
		if _, ok := cl.State.Inflight.GetInbound(7); !ok {
			t.Errorf("max %d: the PUBREC state expired", max)
		}
	}
}
