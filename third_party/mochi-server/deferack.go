package mqtt

import (
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ggbroker patch: acknowledgements that wait for a hook's durable write without holding up the read
// loop. A storage hook that must have a QoS 1 message on disk before its PUBACK (ggbroker's publish
// log, the bridge's spool) used to wait for its fsync inside OnPublish, in the client's read loop: a
// publisher's next message waited for the previous one's commit, so group commit batched only what
// different connections sent at the same instant. Now the hook starts its write, hands DeferAck the
// wait for it, and returns; mochi delivers the message and reads on, and the client's ack writer
// sends the PUBACKs in the order their messages came, each once its waits returned.

// maxDeferredAcks bounds the acknowledgements one client may have waiting. At the bound the read
// loop waits too, so a client never has more unacknowledged messages than this (well below the
// Receive Maximum ggbroker grants).
const maxDeferredAcks = 256

type deferredAck struct {
	ack   packets.Packet
	waits []func() error
}

// DeferAck makes the PUBACK of the QoS 1 PUBLISH being handled wait until wait returns: call it
// from OnPublish, in the client's read loop. If wait fails, an MQTT 5 client gets PUBACK 0x80 and an
// MQTT 3.1.1 one is disconnected (it has no negative PUBACK), so that it sends the message again.
// The message is delivered to subscribers meanwhile, as it would be after an immediate PUBACK.
//
// The inline client's messages are never acknowledged, and it publishes from many goroutines at
// once: DeferAck does nothing for it.
func (cl *Client) DeferAck(wait func() error) {
	if cl.Net.Inline {
		return
	}
	cl.State.ackAfter = append(cl.State.ackAfter, wait)
}

// deferredAck queues the PUBACK of pk for the ack writer, if a hook deferred it or acknowledgements
// are queued already (PUBACKs go in the order of their PUBLISHes [MQTT-4.6.0-2]), and then
// delivers the message; it reports whether it did.
func (s *Server) deferredAck(cl *Client, pk packets.Packet) bool {
	st := &cl.State
	st.ackMu.Lock()
	if len(st.ackAfter) == 0 && !st.ackRunning {
		st.ackMu.Unlock()
		return false
	}
	if st.ackCond == nil {
		st.ackCond = sync.NewCond(&st.ackMu)
	}
	for len(st.ackQueue) >= maxDeferredAcks && !cl.Closed() {
		st.ackCond.Wait()
	}
	st.Inflight.DecreaseReceiveQuota()
	ack := s.buildAck(pk.PacketID, packets.Puback, 0, packets.Properties{}, packets.CodeSuccess) // [MQTT-4.3.2-4]
	// The PUBACK waits in the client's packet ID space, so that the ID counts as in use meanwhile; the
	// hooks are not told (see processPublish: it is not an outgoing message of the server's).
	if ok := st.Inflight.Set(ack); ok {
		atomic.AddInt64(&s.Info.Inflight, 1)
	}
	st.ackQueue = append(st.ackQueue, deferredAck{ack: ack, waits: append([]func() error(nil), st.ackAfter...)})
	st.ackAfter = st.ackAfter[:0]
	start := !st.ackRunning
	st.ackRunning = true
	st.ackMu.Unlock()
	if start {
		go s.writeDeferredAcks(cl)
	}

	s.publishToSubscribers(pk)
	s.hooks.OnPublished(cl, pk)
	return true
}

// writeDeferredAcks is a client's ack writer: it sends the queued acknowledgements in order, each
// once its waits returned, and stops when the queue is empty.
func (s *Server) writeDeferredAcks(cl *Client) {
	st := &cl.State
	for {
		st.ackMu.Lock()
		if len(st.ackQueue) == 0 {
			st.ackRunning = false
			st.ackQueue = nil
			st.ackMu.Unlock()
			return
		}
		d := st.ackQueue[0]
		st.ackQueue[0] = deferredAck{}
		st.ackQueue = st.ackQueue[1:]
		st.ackCond.Broadcast()
		st.ackMu.Unlock()

		var err error
		for _, w := range d.waits {
			if e := w(); e != nil && err == nil {
				err = e
			}
		}
		switch {
		case err == nil:
			_ = cl.WritePacket(d.ack)
		case cl.Properties.ProtocolVersion == 5:
			d.ack.ReasonCode = packets.ErrUnspecifiedError.Code
			_ = cl.WritePacket(d.ack)
		default:
			cl.Stop(packets.ErrUnspecifiedError)
		}
		if ok := st.Inflight.DeleteInbound(d.ack.PacketID); ok {
			atomic.AddInt64(&s.Info.Inflight, -1)
		}
		st.Inflight.IncreaseReceiveQuota()
	}
}
