package broker

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/profile"
)

// expireSessions ends MQTT 3.1.1 persistent sessions whose client has been gone longer than the
// profile's session expiry (AWS IoT Core: 1 hour). mochi expires 3.1.1 sessions only at
// Capabilities.MaximumSessionExpiryInterval, which is also the MQTT 5 clamp (7 days), so the two need
// this separate sweep.
func (b *Broker) expireSessions(ctx context.Context) {
	if b.profile.SessionExpirySeconds <= 0 {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for id, cl := range b.server.Clients.GetAll() {
				gone := cl.StopTime()
				if cl.Net.Inline || cl.Properties.ProtocolVersion >= 5 || gone == 0 ||
					!profile.SessionExpired(gone, now.Unix(), uint32(b.profile.SessionExpirySeconds)) {
					continue
				}
				b.server.ExpireClient(cl) // every hook hears of it: the storage hook removes it from disk too
				b.log.Info("persistent session expired", zap.String("clientId", id), zap.Int("afterSeconds", b.profile.SessionExpirySeconds))
			}
		}
	}
}
