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
