package mqtt

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// PublishToClient delivers pk to one client as if it matched sub, with the same ACL check, QoS
// downgrade, inflight tracking and send quota as a delivery to a subscriber (ggbroker patch: the device
// services answer one requester without publishing to every subscriber of the topic).
func (s *Server) PublishToClient(cl *Client, sub packets.Subscription, pk packets.Packet) (packets.Packet, error) {
	if pk.Created == 0 {
		pk.Created = time.Now().Unix()
	}
	if pk.Origin == "" {
		pk.Origin = s.inlineClient.ID
	}
	if len(pk.Payload) > 0 {
		pk.Payload = append([]byte(nil), pk.Payload...) // the queued packet shares it (see copyForDelivery)
	}
	return s.publishToClient(cl, sub, pk)
}

// InlineClient is the server's inline client (nil unless Options.InlineClient), for InjectPacket.
func (s *Server) InlineClient() *Client { return s.inlineClient }

// ExpireClient ends a disconnected client's session as mochi's own expiry does, every hook's
// OnClientExpired included (ggbroker patch: ggbroker expires MQTT 3.1.1 sessions on the behaviour
// profile's clock, which mochi's single MaximumSessionExpiryInterval cannot express).
func (s *Server) ExpireClient(cl *Client) {
	s.UnsubscribeClient(cl)
	cl.ClearInflights()
	s.Clients.Delete(cl.ID)
	s.hooks.OnClientExpired(cl)
}

// stillAllowed asks the hooks' ACL again, at the moment a queued message is finally sent (resent on
// reconnect, or released by the send quota), whether the client may still receive it; one it may not
// is removed from the session and reported dropped (ggbroker patch: a message queued for an offline
// session was delivered on the permission it had when it was queued, after a policy took it away).
// A message queued with a topic alias has no topic to ask about and is sent; with no ACL hook there is
// nobody to ask (a server without one delivers nothing to subscribers in the first place).
func (cl *Client) stillAllowed(pk packets.Packet) bool {
	if pk.TopicName == "" || cl.ops == nil || !cl.ops.hooks.Provides(OnACLCheck) || cl.ops.hooks.OnACLCheck(cl, pk.TopicName, false) {
		return true
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
	}
	cl.ops.hooks.OnQosDropped(cl, pk)
	return false
}

// forget empties the inflight store without hooks or counters (see inheritClientSession).
func (i *Inflight) forget() {
	i.Lock()
	defer i.Unlock()
	i.internal, i.inbound = map[uint16]packets.Packet{}, map[uint16]packets.Packet{}
	i.order, i.orderIn, i.held = map[uint16]uint64{}, map[uint16]uint64{}, map[uint16]bool{}
	i.waiting, i.head, i.bytes = nil, 0, 0
}

// Bytes is the payload size of the outgoing messages the session holds.
func (i *Inflight) Bytes() int64 {
	i.RLock()
	defer i.RUnlock()
	return i.bytes
}

// ggbroker patch: the publish -> deliver path allocates nothing per delivered message of its own
// (BenchmarkDeliverQoS0). Upstream copied the payload for every subscriber and allocated the
// queued packet, its encoding buffer and its write batch; the payload is now shared (no code
// changes a payload after it is decoded; a payload from an inline publish is copied once, in
// Server.Publish), and the rest comes from pools.

// copyForDelivery is pk.Copy(false) without copying the payload, which every subscriber's copy of
// a message shares: a delivered packet is only read.
func copyForDelivery(pk packets.Packet) packets.Packet {
	payload := pk.Payload
	pk.Payload = nil
	out := pk.Copy(false)
	out.Payload = payload
	return out
}

var outboundPool = sync.Pool{New: func() any { return new(packets.Packet) }}

// getOutbound returns a pooled copy of pk for a client's outbound queue. Its reader, WriteLoop,
// gives it back with putOutbound once written; nothing keeps the pointer (the inflight store and
// the hooks get the packet by value).
func getOutbound(pk packets.Packet) *packets.Packet {
	p := outboundPool.Get().(*packets.Packet)
	*p = pk
	return p
}

func putOutbound(p *packets.Packet) {
	*p = packets.Packet{}
	outboundPool.Put(p)
}

// waitForInflightRoom waits, at most Options.SlowSubscriberWait, until the session store of a
// connected client has room for one more QoS 1/2 message, and reports whether it has. It is the
// QoS 1/2 form of waitForRoom: the publisher's PUBACK has gone out already, but its read loop reads
// nothing more meanwhile, so it runs out of its own inflight window and slows down. A disconnected
// client's session is not waited for (nobody acknowledges).
func (s *Server) waitForInflightRoom(cl *Client) bool {
	if cl.Net.Conn == nil || cl.Closed() {
		return false
	}
	max := int(s.Options.Capabilities.MaximumInflight)
	return s.waitFor(cl, "its session store", "it acknowledges", cl.State.Inflight.RoomSignal,
		func() bool { return cl.State.Inflight.Len() < max })
}

// waitForRoom queues pk for cl once its full outbound queue has room, waiting at most
// Options.SlowSubscriberWait, and reports whether it did. See that option for why.
func (s *Server) waitForRoom(cl *Client, pk *packets.Packet) bool {
	return s.waitFor(cl, "its queue", "it reads", cl.State.outbound.roomSignal, func() bool { return cl.queue(pk) })
}

// waitFor is the wait of waitForRoom and waitForInflightRoom: it tries done, and again each time
// signal's channel closes, until done succeeds, Options.SlowSubscriberWait runs out (the client is
// then stalled, see that option) or the client closes. A stalled client gets no wait. place and
// again say, in the log record, what was full and what ends the stall.
func (s *Server) waitFor(cl *Client, place, again string, signal func() <-chan struct{}, done func() bool) bool {
	wait := s.Options.SlowSubscriberWait
	if wait <= 0 || cl.State.stalled.Load() {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		room := signal()
		if done() {
			return true
		}
		select {
		case <-room:
		case <-t.C:
			cl.State.stalled.Store(true)
			s.Log.Warn("subscriber stalled: a publisher waited for room in "+place+" in vain; its messages are dropped until "+again+" again",
				"client", cl.ID, "wait", wait.String())
			return false
		case <-cl.State.open.Done():
			return false
		}
	}
}

// queue puts pk on the client's outbound queue and wakes its writer; it reports false when the
// queue is full (pk is then the caller's still).
func (cl *Client) queue(pk *packets.Packet) bool {
	if !cl.State.outbound.push(pk) {
		return false
	}
	atomic.AddInt32(&cl.State.outboundQty, 1)
	cl.wakeWriter()
	return true
}
