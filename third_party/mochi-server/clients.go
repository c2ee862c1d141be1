// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/mempool"
	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
//
// ggbroker patch: the map is a sync.Map. Get runs for every delivered message (the subscriber's
// client by its ID), and under the read lock of upstream's RWMutex every publisher's goroutine
// wrote the same lock word: 2 % of a QoS 0 fan-in's CPU. Get no longer locks; the writers (connects
// and disconnects) still take the mutex, which keeps n exact.
type Clients struct {
	internal sync.Map // client id -> *Client
	n        int
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	if _, loaded := cl.internal.Swap(val.ID, val); !loaded {
		cl.n++
	}
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	cl.internal.Range(func(k, v any) bool {
		m[k.(string)] = v.(*Client)
		return true
	})
	return m
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	v, ok := cl.internal.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*Client), true
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	return cl.n
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	if _, loaded := cl.internal.LoadAndDelete(id); loaded {
		cl.n--
	}
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	// ggbroker patch (upstream mochi-mqtt/server#488, #489): cl.Len() read-locked again while holding
	// the read lock, which deadlocks if a writer arrives in between.
	clients := make([]*Client, 0, cl.n)
	cl.internal.Range(func(_, v any) bool {
		if client := v.(*Client); client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
		return true
	})
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex

	// HookState is for a hook's own state of this client (ggbroker patch 52), so that a hook asked
	// about every delivery (OnACLCheck) reaches it from the client it is given, without a map lookup
	// keyed by client ID. The server never reads or writes it.
	HookState atomic.Value
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn     net.Conn      // the net.Conn used to establish the connection
	bconn    *bufio.Reader // a buffered net.Conn for reading packets
	idle     IdleWaiter    // Conn, when it can wait for input without a buffer (ggbroker patch; see waitIdle)
	outbuf   *bytes.Buffer // a buffer for writing packets
	Remote   string        // the remote address of the client
	Listener string        // listener id of the client
	Inline   bool          // if true, the client is the built-in 'inline' embedded client
}

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
type Will struct {
	Payload           []byte                 // -
	User              []packets.UserProperty // -
	TopicName         string                 // -
	Flag              uint32                 // 0,1
	WillDelayInterval uint32                 // -
	Qos               byte                   // -
	Retain            bool                   // -
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases  TopicAliases       // a map of topic aliases
	stopCause     atomic.Value       // reason for stopping
	Inflight      *Inflight          // a map of in-flight qos messages
	Subscriptions *Subscriptions     // a map of the subscription filters a client maintains
	disconnected  int64              // the time the client disconnected in unix time, for calculating expiry
	outbound      *outQueue          // queue for pending outbound packets (ggbroker patch: grows on demand, see outQueue)
	endOnce       sync.Once          // only end once
	isTakenOver   atomic.Bool        // used to identify orphaned clients
	packetID      uint32             // the current highest packetID
	open          context.Context    // indicate that the client is open for packet exchange
	cancelOpen    context.CancelFunc // cancel function for open context
	outboundQty   int32              // number of messages currently in the outbound queue
	stalled       atomic.Bool        // ggbroker patch: made a publisher wait in vain (see Options.SlowSubscriberWait)
	deferFlush    bool               // ggbroker patch: the read loop has more input buffered (see Read); under the client's lock
	// ggbroker patch: deferred acknowledgements (see DeferAck). ackAfter is the read loop's, for the
	// PUBLISH being handled; the queue and its flag are under ackMu, which ackCond waits on.
	// sendMu orders what takes send quota: publishToClient's decision to send or hold a QoS 1/2
	// message, and releaseHeldLocked (ggbroker patch).
	sendMu     sync.Mutex
	ackAfter   []func() error
	ackMu      sync.Mutex
	ackCond    *sync.Cond
	ackQueue   []deferredAck
	ackRunning bool
	writable   atomic.Bool // ggbroker patch: CONNACK is out, queued packets may be written (see startWriter)
	writing    atomic.Bool // ggbroker patch: a writer of queued packets runs
	Keepalive  uint16      // the number of seconds the connection can wait
	// deadlineSet is when refreshDeadline last set the connection's deadline, for deadlineKeepalive
	// (ggbroker patch); only the read loop uses them.
	deadlineSet       time.Time
	deadlineKeepalive uint16
	ServerKeepalive   bool // keepalive was set by the server
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      NewInflights(),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
			outbound:      newOutQueue(int(o.options.Capabilities.MaximumClientWritesPending)),
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		cl.Net = ClientConnection{
			Conn:   c,
			Remote: c.RemoteAddr().String(),
		}
		// ggbroker patch: a connection that can wait for input by itself reads through a pooled
		// buffer, which it holds only while there is input (waitIdle).
		if w, ok := c.(IdleWaiter); ok && o.readers != nil {
			cl.Net.idle = w
			cl.Net.bconn = o.readers.get(c)
		} else {
			cl.Net.bconn = bufio.NewReaderSize(c, o.options.ClientNetReadBufferSize)
		}
	}

	return cl
}

// WriteLoop ranges over pending outbound messages and writes them to the client connection, until
// the client closes. (The server does not run it: see startWriter.)
func (cl *Client) WriteLoop() {
	for {
		select {
		case <-cl.State.outbound.ready:
			for pk, ok := cl.State.outbound.pop(); ok; pk, ok = cl.State.outbound.pop() {
				cl.writeQueued(pk)
			}
		case <-cl.State.open.Done():
			return
		}
	}
}

// writeQueued writes one packet taken from the outbound queue.
func (cl *Client) writeQueued(pk *packets.Packet) {
	if err := cl.WritePacket(*pk); err != nil {
		// TODO : Figure out what to do with error
		cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
	}
	putOutbound(pk)
	atomic.AddInt32(&cl.State.outboundQty, -1)
	if cl.State.stalled.Load() && cl.State.outbound.len() <= cl.State.outbound.max/2 {
		cl.State.stalled.Store(false) // ggbroker patch: publishers wait for it again
	}
}

// ggbroker patch: a client's writer runs only while its outbound queue holds something. Upstream
// kept a WriteLoop goroutine per client for the client's life, with its stack: most devices of a
// gateway are idle most of the time, and that goroutine was a large share of an idle connection's
// memory. The server marks a client writable (startWriter) once its CONNACK and resent messages are
// out; after that, whoever queues a packet calls wakeWriter, which starts a writer unless one runs.
// A writer that finds the queue empty stops, and looks once more after it has said so, so that a
// packet queued in between is not left behind: a producer that saw the writer running queued its
// packet before the writer cleared the flag, so the writer's second look sees it.

// startWriter makes the client writable and writes what was queued before.
func (cl *Client) startWriter() {
	cl.State.writable.Store(true)
	cl.wakeWriter()
}

// wakeWriter starts the client's writer if it is writable, something is queued and no writer runs.
func (cl *Client) wakeWriter() {
	if cl.State.writable.Load() && cl.State.writing.CompareAndSwap(false, true) {
		go cl.drainOutbound()
	}
}

// drainOutbound writes queued packets until the queue is empty or the client closes.
func (cl *Client) drainOutbound() {
	for {
		if cl.Closed() {
			cl.State.writing.Store(false)
			return
		}
		if pk, ok := cl.State.outbound.pop(); ok {
			cl.writeQueued(pk)
			continue
		}
		cl.flushBatch() // its last packet may have waited for a batch the read loop is still making
		cl.State.writing.Store(false)
		if cl.State.outbound.len() == 0 || !cl.State.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	cl.Properties.Username = pk.Connect.Username
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	if pk.Connect.Keepalive <= minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", cl.ID,
			"keepalive", pk.Connect.Keepalive,
			"recommended", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	cl.ID = pk.Connect.ClientIdentifier
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           pk.Connect.WillPayload,
			TopicName:         pk.Connect.WillTopic,
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              pk.Connect.WillProperties.User,
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
//
// ggbroker patch: at most once per deadlineSlack. Upstream set the deadline for every packet read,
// and a deadline is two runtime timers changed (read and write): 4 % of the CPU of a QoS 1 fan-in. The
// deadline is now the keep-alive window plus the slack after the refresh, so that it is never earlier
// than the window after the last packet read, and at most the slack later.
func (cl *Client) refreshDeadline(keepalive uint16) {
	if cl.Net.Conn == nil {
		return
	}
	if keepalive == 0 {
		cl.State.deadlineSet = time.Time{}
		_ = cl.Net.Conn.SetDeadline(time.Time{}) // no keep-alive: no deadline
		return
	}
	now := time.Now()
	window := time.Duration(keepalive+(keepalive/2)) * time.Second // [MQTT-3.1.2-22]
	slack := deadlineSlack(window)
	if keepalive == cl.State.deadlineKeepalive && !cl.State.deadlineSet.IsZero() && now.Sub(cl.State.deadlineSet) < slack {
		return
	}
	cl.State.deadlineSet, cl.State.deadlineKeepalive = now, keepalive
	_ = cl.Net.Conn.SetDeadline(now.Add(window + slack)) // [MQTT-3.1.2-22]
}

// deadlineSlack is how long a keep-alive deadline stands before it is refreshed: a second, or a
// quarter of a window shorter than four seconds.
func deadlineSlack(window time.Duration) time.Duration {
	return min(time.Second, window/4)
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	cl.Lock()
	defer cl.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if !cl.State.Inflight.Has(uint16(i)) {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
func (cl *Client) ResendInflightMessages(force bool) error {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}

	// ggbroker patch: PUBLISHes are resent within the client's send quota (its Receive Maximum, or what
	// a hook set), oldest first; the rest wait for acknowledgements, in order, as new messages do.
	// Upstream wrote the whole queue at once, more than the client allows [MQTT-3.3.4-9], and marked
	// DUP even messages that had never been sent.
	limited := atomic.LoadInt32(&cl.State.Inflight.maximumSendQuota) > 0
	var waiting []uint16
	defer func() { cl.State.Inflight.wait(waiting) }()
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if tk.FixedHeader.Type == packets.Publish && !cl.stillAllowed(tk) {
			continue
		}
		if tk.FixedHeader.Type == packets.Publish {
			if limited {
				if atomic.LoadInt32(&cl.State.Inflight.sendQuota) <= 0 {
					waiting = append(waiting, tk.PacketID)
					continue
				}
				cl.State.Inflight.DecreaseSendQuota()
			}
			if cl.State.Inflight.IsHeld(tk.PacketID) { // was waiting for quota: this is its first sending
				if tk.Expiry < 0 {
					tk.Expiry = 0 // held the upstream way (Set with Expiry -1)
					cl.State.Inflight.Set(tk)
				}
				cl.State.Inflight.Release(tk.PacketID)
			} else {
				tk.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]
			}
		}

		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.WritePacket(tk)
		if errors.Is(err, packets.ErrPacketTooLarge) {
			continue // ggbroker patch: discarded (see WritePacket), not a reason to refuse the connection
		}
		if err != nil {
			return err
		}

		if tk.FixedHeader.Type == packets.Puback || tk.FixedHeader.Type == packets.Pubcomp {
			if ok := cl.State.Inflight.Remove(tk); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		}
	}

	return nil
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
func (cl *Client) ClearInflights() {
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if ok := cl.State.Inflight.Remove(tk); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
}

// ClearExpiredInflights deletes any inflight messages which have expired. ggbroker patch: only what
// has an expiry (Server.messageExpiry, and the QoS 2 state of acks) expires; upstream also removed
// every message older than maximumExpiry, so an offline session's queue was lost after 24 hours.
// maximumExpiry is kept for the signature's sake: the expiry times already apply it.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if tk.Expiry > 0 && tk.Expiry < now { // [MQTT-3.3.2-5]
			if ok := cl.State.Inflight.Remove(tk); ok {
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
		}
	}

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
func (cl *Client) Read(packetHandler ReadFn) error {
	for {
		if cl.Closed() {
			return nil
		}

		// ggbroker patch: the deadline matters only for a read that waits, so it is refreshed only
		// when nothing is buffered: the packets of a batch the client sent in one go arrived together,
		// and the deadline set before their batch was read still stands for all of them (one clock
		// read per batch instead of per packet, see refreshDeadline).
		if cl.Net.bconn.Buffered() == 0 {
			cl.refreshDeadline(cl.State.Keepalive)
			if cl.Net.idle != nil {
				if err := cl.waitIdle(); err != nil {
					return err
				}
			}
		}
		fh := new(packets.FixedHeader)
		if err := cl.ReadFixedHeader(fh); err != nil {
			return err
		}
		if err := cl.readRest(fh, packetHandler); err != nil {
			return err
		}
	}
}

// readRest reads and handles the rest of a packet whose fixed header Read has read. ggbroker patch:
// a function of its own, so that Read's frame stays small while the goroutine waits in
// ReadFixedHeader for the next packet, which is where an idle connection spends its life: the
// packet values of this function (800 bytes each) made Read's frame 2.4 KiB, and a parked stack is
// shrunk only while it uses under a quarter of it (see connectClient).
//
//go:noinline
func (cl *Client) readRest(fh *packets.FixedHeader, packetHandler ReadFn) error {
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return err
	}

	// ggbroker patch: while more input is already buffered, what the handling writes (PUBACKs,
	// messages released by those PUBACKs, PINGRESPs) waits in the write batch, which is flushed
	// once the buffered input is handled: one write and one TLS record for a batch the client
	// sent in one go, instead of one per packet. The write loop flushes its own batches itself.
	// Only this goroutine changes deferFlush, so it reads it without the lock.
	batched := cl.Net.bconn != nil && cl.Net.bconn.Buffered() > 0
	if batched && !cl.State.deferFlush {
		cl.Lock()
		cl.State.deferFlush = true
		cl.Unlock()
	}

	err = packetHandler(cl, pk) // Process inbound packet.
	if err != nil {
		return err
	}

	if !batched && cl.State.deferFlush {
		cl.Lock()
		cl.State.deferFlush = false
		err = cl.flushOutbuf()
		cl.Unlock()
	}
	return err
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.Net.bconn == nil {
		return ErrConnectionClosed
	}

	b, err := cl.Net.bconn.ReadByte()
	if err != nil {
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		return err
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		return err
	}

	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1) > cl.ops.options.Capabilities.MaximumPacketSize {
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	p := make([]byte, pk.FixedHeader.Remaining)
	n, err := io.ReadFull(cl.Net.bconn, p)
	if err != nil {
		return pk, err
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))

	// ggbroker patch: p is already a fresh slice per packet, which the decoded packet may keep
	// (its payload, for one); upstream copied it once more, an allocation and a copy per packet.
	px := p
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(px)
	case packets.Disconnect:
		err = pk.DisconnectDecode(px)
	case packets.Connack:
		err = pk.ConnackDecode(px)
	case packets.Publish:
		err = pk.PublishDecode(px)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(px)
	case packets.Pubrec:
		err = pk.PubrecDecode(px)
	case packets.Pubrel:
		err = pk.PubrelDecode(px)
	case packets.Pubcomp:
		err = pk.PubcompDecode(px)
	case packets.Subscribe:
		err = pk.SubscribeDecode(px)
	case packets.Suback:
		err = pk.SubackDecode(px)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = pk.UnsubackDecode(px)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		return pk, err
	}

	pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	if pk.Expiry > 0 {
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	pk = cl.ops.hooks.OnPacketEncode(cl, pk)

	var err error
	// ggbroker patch: the encoding buffer is pooled (upstream allocated one per packet and grew it);
	// hooks' OnPacketSent may read the bytes only during the call.
	buf := mempool.GetBuffer()
	defer mempool.PutBuffer(buf)
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}

	if pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		// ggbroker patch: packets written while more were queued wait in outbuf for the last of the
		// queue, which flushes them. Upstream returned here without flushing when the last one was
		// too large, so they stayed until the next packet to the client (never, with keep-alive 0).
		cl.Lock()
		if cl.State.outbound.len() == 0 {
			_ = cl.flushOutbuf()
		}
		cl.Unlock()
		if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 {
			// ggbroker patch: "discard it without sending it and then behave as if it had completed
			// sending that Application Message" [MQTT-3.1.2-25]. Upstream kept it inflight: resent on
			// every reconnect (which then failed), and holding a unit of the send quota for good.
			if cl.State.Inflight.Delete(pk.PacketID) {
				cl.State.Inflight.IncreaseSendQuota()
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				cl.ops.hooks.OnQosDropped(cl, pk)
			}
		}
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}

	n, err := func() (int64, error) {
		cl.Lock()
		defer cl.Unlock()
		if cl.State.outbound.len() == 0 && !cl.State.deferFlush {
			if cl.Net.outbuf == nil {
				return buf.WriteTo(cl.Net.Conn)
			}

			// first write to buffer, then flush buffer
			n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
			err = cl.flushOutbuf()
			return int64(n), err
		}

		// there are more writes in the queue
		if cl.Net.outbuf == nil {
			if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				return buf.WriteTo(cl.Net.Conn)
			}
			cl.Net.outbuf = mempool.GetBuffer() // ggbroker patch: pooled, given back by flushOutbuf
		}

		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize {
			return int64(n), nil
		}

		err = cl.flushOutbuf()
		return int64(n), err
	}()
	if err != nil {
		return err
	}

	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
	}

	cl.ops.hooks.OnPacketSent(cl, pk, buf.Bytes())

	return err
}

// flushBatch writes the write batch now (ggbroker patch: see Read).
func (cl *Client) flushBatch() {
	cl.Lock()
	defer cl.Unlock()
	_ = cl.flushOutbuf()
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		mempool.PutBuffer(cl.Net.outbuf)
		cl.Net.outbuf = nil
	}
	return
}
