// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal map[uint16]packets.Packet // internal contains the inflight packets
	// inbound holds the acknowledgements (PUBACK, PUBREC, PUBCOMP) of QoS 1/2 messages the client
	// sent, keyed on the client's packet IDs. ggbroker patch: upstream kept them in internal, with the
	// server's outgoing messages, but the client and the server choose their packet IDs independently
	// (MQTT 5 section 2.2.1, 3.1.1 section 2.3.1): a client's PUBLISH with ID N deleted the
	// unacknowledged outgoing message N, and its SUBSCRIBE with ID N was refused with 0x91.
	inbound map[uint16]packets.Packet
	// order is when each packet ID of internal and inbound was first set, from next. ggbroker patch:
	// GetAll returns messages in this order (publish order, for a session's queue); upstream sorted by
	// uint16(Created), the creation second truncated to 16 bits, with an unstable sort, so queued
	// messages were resent shuffled on every reconnect.
	order               map[uint16]uint64
	orderIn             map[uint16]uint64
	next                uint64
	receiveQuota        int32 // remaining inbound qos quota for flow control
	sendQuota           int32 // remaining outbound qos quota for flow control
	maximumReceiveQuota int32 // maximum allowed receive quota
	maximumSendQuota    int32 // maximum allowed send quota
	// bytes is the payload size of the outgoing messages held (ggbroker patch: a session's queue is
	// bounded in bytes too, Capabilities.MaximumInflightBytes).
	bytes int64
	// room, once made by RoomSignal, is closed by the next Delete (ggbroker patch: a publisher waits
	// for room in a connected subscriber's full store, Options.SlowSubscriberWait).
	room chan struct{}

	// waiting holds, in arrival order, the packet IDs of messages held (waiting for send quota), from waiting[head] on. ggbroker patch: NextImmediate takes the oldest from here instead of
	// searching every inflight message, which made releasing a backlog quadratic. An ID whose message
	// was since removed, sent or replaced is skipped when reached.
	waiting []uint16
	head    int
	// held marks the messages waiting for send quota. ggbroker patch: upstream marked them with
	// Expiry -1, which lost the expiry their publisher set (they never expired, and went out without
	// their Message Expiry Interval); Hold marks them here and keeps it. Set with Expiry < 0 still
	// marks a message as waiting, as upstream.
	held map[uint16]bool
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]packets.Packet{},
		inbound:  map[uint16]packets.Packet{},
		order:    map[uint16]uint64{},
		orderIn:  map[uint16]uint64{},
		held:     map[uint16]bool{},
	}
}

// isInbound says whether an inflight packet belongs to a flow the client started (the server's
// acknowledgement of a client's PUBLISH or PUBREL), and so to the client's packet ID space.
func isInbound(m packets.Packet) bool {
	switch m.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return true
	}
	return false
}

// Set adds or updates an inflight packet by packet id: an acknowledgement of a client's message in
// the client's ID space (see GetInbound), anything else in the server's.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	if isInbound(m) {
		_, ok := i.inbound[m.PacketID]
		i.inbound[m.PacketID] = m
		if !ok {
			i.next++
			i.orderIn[m.PacketID] = i.next
		}
		return !ok
	}

	old, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	i.bytes += int64(len(m.Payload) - len(old.Payload))
	if !ok {
		i.next++
		i.order[m.PacketID] = i.next
	}
	if m.Expiry < 0 {
		i.held[m.PacketID] = true
		i.waiting = append(i.waiting, m.PacketID)
	} else {
		delete(i.held, m.PacketID)
	}
	return !ok
}

// Hold sets an outgoing message as waiting for send quota, keeping its expiry (see held).
func (i *Inflight) Hold(m packets.Packet) {
	i.Lock()
	defer i.Unlock()
	old, ok := i.internal[m.PacketID]
	if !ok {
		i.next++
		i.order[m.PacketID] = i.next
	}
	i.internal[m.PacketID] = m
	i.bytes += int64(len(m.Payload) - len(old.Payload))
	i.held[m.PacketID] = true
	i.waiting = append(i.waiting, m.PacketID)
}

// Release marks a message that was waiting for send quota as sent.
func (i *Inflight) Release(id uint16) {
	i.Lock()
	defer i.Unlock()
	delete(i.held, id)
}

// IsHeld says whether the message with this packet ID waits for send quota.
func (i *Inflight) IsHeld(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	return i.held[id]
}

// GetInbound returns the acknowledgement kept for the client's QoS 1/2 message with this packet id.
func (i *Inflight) GetInbound(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	m, ok := i.inbound[id]
	return m, ok
}

// DeleteInbound removes the acknowledgement kept for the client's message with this packet id.
func (i *Inflight) DeleteInbound(id uint16) bool {
	i.Lock()
	defer i.Unlock()
	_, ok := i.inbound[id]
	delete(i.inbound, id)
	delete(i.orderIn, id)
	return ok
}

// Remove removes an inflight packet from the ID space it belongs to (see Set).
func (i *Inflight) Remove(m packets.Packet) bool {
	if isInbound(m) {
		return i.DeleteInbound(m.PacketID)
	}
	return i.Delete(m.PacketID)
}

// Get returns an inflight packet (an outgoing message, in the server's packet ID space) by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Has reports whether an outgoing message with this packet id is inflight. ggbroker patch: the callers
// that only asked that used Get, which copies the 800-byte packet out.
func (i *Inflight) Has(id uint16) bool {
	i.RLock()
	_, ok := i.internal[id]
	i.RUnlock()
	return ok
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal) + len(i.inbound)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	for k, v := range i.inbound {
		c.inbound[k] = v
	}
	for k, v := range i.order {
		c.order[k] = v
	}
	for k, v := range i.orderIn {
		c.orderIn[k] = v
	}
	c.next, c.bytes = i.next, i.bytes
	for k, v := range i.held {
		c.held[k] = v
	}
	c.waiting = append(c.waiting, i.waiting[i.head:]...)
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || i.held[v.PacketID] {
			m = append(m, v)
		}
	}

	sort.Slice(m, func(a, b int) bool {
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})

	if !immediate {
		n := len(m)
		for _, v := range i.inbound {
			m = append(m, v)
		}
		in := m[n:]
		sort.Slice(in, func(a, b int) bool {
			return i.orderIn[in[a].PacketID] < i.orderIn[in[b].PacketID]
		})
	}

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	// ggbroker patch: upstream called GetAll here, under the read lock GetAll takes again: a writer
	// (Set, from a publisher's goroutine) arriving between the two deadlocked the client and every
	// publisher to it. GetAll also built and sorted the list of every waiting message, on each packet
	// the client sends. This takes the oldest waiting message from the queue Set keeps, in O(1)
	// amortised; it takes the write lock because it moves the queue's head.
	i.Lock()
	defer i.Unlock()
	for i.head < len(i.waiting) {
		id := i.waiting[i.head]
		i.head++
		if m, ok := i.internal[id]; ok && i.held[id] {
			i.compact()
			return m, true
		}
	}
	i.waiting, i.head = i.waiting[:0], 0
	return packets.Packet{}, false
}

// wait marks the messages with these packet IDs as waiting for send quota and puts them, in this
// order, at the front of the waiting queue (ggbroker patch, for ResendInflightMessages; a message set
// as waiting meanwhile stays behind them).
func (i *Inflight) wait(ids []uint16) {
	if len(ids) == 0 {
		return
	}
	i.Lock()
	defer i.Unlock()
	first := make(map[uint16]bool, len(ids))
	queue := make([]uint16, 0, len(ids)+len(i.waiting)-i.head)
	for _, id := range ids {
		if _, ok := i.internal[id]; ok && !first[id] {
			i.held[id] = true
			first[id] = true
			queue = append(queue, id)
		}
	}
	for _, id := range i.waiting[i.head:] {
		if !first[id] {
			queue = append(queue, id)
		}
	}
	i.waiting, i.head = queue, 0
}

// compact drops the consumed front of the waiting queue once it is most of the slice.
func (i *Inflight) compact() {
	if i.head > 1024 && i.head*2 > len(i.waiting) {
		n := copy(i.waiting, i.waiting[i.head:])
		i.waiting, i.head = i.waiting[:n], 0
	}
}

// Delete removes an in-flight message (in the server's packet ID space) from the map. Returns true if
// the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	// ggbroker patch: the payload's length is read in place; upstream copied the 800-byte packet out.
	_, ok := i.internal[id]
	if !ok {
		return false
	}
	i.bytes -= int64(len(i.internal[id].Payload))
	delete(i.internal, id)
	delete(i.order, id)
	delete(i.held, id)
	if i.room != nil {
		close(i.room)
		i.room = nil
	}

	return ok
}

// RoomSignal returns a channel that the next Delete of a message closes (ggbroker patch).
func (i *Inflight) RoomSignal() <-chan struct{} {
	i.Lock()
	defer i.Unlock()
	if i.room == nil {
		i.room = make(chan struct{})
	}
	return i.room
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// takeSendQuota takes a unit of the send quota if there is one (ggbroker patch: one atomic step;
// a load then a decrement let two senders take one unit).
func (i *Inflight) takeSendQuota() bool {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q <= 0 {
			return false
		}
		if atomic.CompareAndSwapInt32(&i.sendQuota, q, q-1) {
			return true
		}
	}
}

// hasHeld reports whether a message waits for send quota (ggbroker patch).
func (i *Inflight) hasHeld() bool {
	i.RLock()
	defer i.RUnlock()
	return len(i.held) > 0
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
