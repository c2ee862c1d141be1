package mqtt

import (
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
