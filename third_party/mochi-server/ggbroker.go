package mqtt

import (
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
