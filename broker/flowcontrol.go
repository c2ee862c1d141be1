package broker

import (
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// flowControl keeps QoS 1/2 messages for a connected subscriber out of the path where mochi drops
// them. mochi queues every outgoing message in the client's pending writes (limits.maxPendingWrites)
// and drops what does not fit, QoS 1 included, unless the client has a send quota (an MQTT 5 Receive
// Maximum): then messages beyond the quota wait in the session's inflight store (on disk with
// persistence) and go out as acknowledgements come back. MQTT 3.1.1 has no Receive Maximum, so this
// gives every client a quota of at most half the pending writes: a slow subscriber's QoS 1 messages
// wait instead of being dropped, and only QoS 0 is dropped when it stops reading.
type flowControl struct {
	mqtt.HookBase
	quota int32
}

func (f *flowControl) ID() string { return "ggbroker-flow-control" }

func (f *flowControl) Provides(b byte) bool { return b == mqtt.OnSessionEstablish }

func (f *flowControl) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	q := f.quota
	if rm := int32(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < q {
		q = rm
	}
	cl.State.Inflight.ResetSendQuota(q)
}

// addFlowControl gives every client a send quota (see flowControl).
func (b *Broker) addFlowControl() error {
	caps := b.server.Options.Capabilities
	quota := max(min(caps.MaximumClientWritesPending/2, int32(caps.MaximumInflight)), 1)
	if err := b.server.AddHook(&flowControl{quota: quota}, nil); err != nil {
		return fmt.Errorf("add flow control hook: %w", err)
	}
	return nil
}
