package broker

import (
	"context"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
)

// revocationInterval is how often the registry file is looked at for a status change: a stat, and a
// read only when it changed. AWS closes a revoked certificate's connections "within minutes"; here it
// is within this interval.
const revocationInterval = 250 * time.Millisecond

// watchRevocations closes the live connections of certificates that are no longer ACTIVE (revoked,
// deactivated, deleted from the registry) as soon as the registry changes, whichever process changed
// it (`ggbroker device revoke`, the AWS IoT API). Until it did, only the next CONNECT was refused.
func (b *Broker) watchRevocations(ctx context.Context) {
	tick := time.NewTicker(revocationInterval)
	defer tick.Stop()
	var last *auth.Data
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		snap, err := b.state.Registry.Snapshot()
		if err != nil || snap == last {
			continue
		}
		last = snap
		b.closeRevoked(snap)
	}
}

// closeRevoked disconnects every live connection whose certificate snap no longer holds as ACTIVE.
func (b *Broker) closeRevoked(snap *auth.Data) {
	b.hook.conns.Range(func(k, v any) bool {
		cl, s := k.(*mqtt.Client), v.(*authz.Session)
		id := s.Identity
		if cl.Closed() || id == nil || id.CertificateID == "" || (b.local != nil && id.Record == b.local.record) {
			return true
		}
		why := ""
		switch rec, ok := snap.Certificates[id.CertificateID]; {
		case !ok:
			why = fmt.Sprintf("certificate %s was removed from the registry", id.CertificateID)
		case rec.Status != auth.StatusActive:
			why = fmt.Sprintf("certificate %s is %s", id.CertificateID, rec.Status)
		default:
			return true
		}
		b.log.Info("closing the connection of a certificate that is no longer active", zap.String("clientId", cl.ID),
			zap.String("principalId", id.CertificateID), zap.String("details", why))
		_ = b.disconnectForCredentials(cl, why)
		return true
	})
}
