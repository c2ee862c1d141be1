package mqtt

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

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
