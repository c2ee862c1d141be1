package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ggbroker/ggbroker/internal/mqttwire"
)

// rawConn is a client that writes MQTT 3.1.1 packets itself, in batches, and parses what it reads
// without a client library (--raw). paho spends more CPU per message than a broker does, and on the
// same cores it, not the broker, was the limit of a flood (BENCHMARKS.md: ggbroker delivered as much
// as the null broker); this client is cheap enough to find the broker's limit.
type rawConn struct {
	c       net.Conn
	br      *bufio.Reader
	wmu     sync.Mutex // serializes writes: the publisher's batches and the reader's PUBACKs
	onMsg   func(payload []byte)
	subacks chan byte     // the SUBACK return code
	acks    chan struct{} // a PUBACK for one of our publishes
	done    chan struct{} // the read loop ended
	err     atomic.Value  // why it ended
}

// rawConnect connects device i: TLS (unless --plain), CONNECT with a clean session, CONNACK.
// onMsg, if not nil, gets the payload of every PUBLISH the broker sends.
func (t *target) rawConnect(creds *credentials, i int, onMsg func([]byte)) (*rawConn, error) {
	d := net.Dialer{Timeout: t.timeout}
	var c net.Conn
	var err error
	if cfg := creds.tlsConfig(i, t.plain); cfg != nil {
		c, err = tls.DialWithDialer(&d, "tcp", t.addr, cfg)
	} else {
		c, err = d.Dial("tcp", t.addr)
	}
	if err != nil {
		return nil, err
	}
	r := &rawConn{c: c, br: bufio.NewReaderSize(c, 64<<10), onMsg: onMsg, subacks: make(chan byte, 1),
		acks: make(chan struct{}, 1<<16), done: make(chan struct{})}
	_ = c.SetDeadline(time.Now().Add(t.timeout))
	if _, err := c.Write(connectPacket(creds.devices[i].name, 120)); err != nil { // keep-alive 120 s: no PINGREQ needed in a run
		c.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(r.br, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNACK %x: refused", ack)
	}
	_ = c.SetDeadline(time.Time{})
	go r.read()
	return r, nil
}

// read parses packets until the connection ends: PUBLISH to onMsg (a QoS 1 one is acknowledged,
// the acknowledgements of a read batch in one write), SUBACK and PUBACK to their channels.
func (r *rawConn) read() {
	defer close(r.done)
	var pubacks, p []byte
	for {
		h, err := r.br.ReadByte()
		if err != nil {
			r.err.Store(err)
			return
		}
		n, err := mqttwire.ReadVarint(r.br)
		if err != nil {
			r.err.Store(err)
			return
		}
		if cap(p) < n {
			p = make([]byte, n)
		}
		p = p[:n] // reused: onMsg reads the payload during the call only
		if _, err := io.ReadFull(r.br, p); err != nil {
			r.err.Store(err)
			return
		}
		switch h >> 4 {
		case 3: // PUBLISH
			if len(p) < 2 {
				continue
			}
			tl := int(binary.BigEndian.Uint16(p))
			rest := p[2+tl:]
			if (h>>1)&3 > 0 {
				pubacks = append(pubacks, 0x40, 2, rest[0], rest[1])
				rest = rest[2:]
			}
			if r.onMsg != nil {
				r.onMsg(rest)
			}
		case 9: // SUBACK
			if len(p) >= 3 {
				r.subacks <- p[2]
			}
		case 4: // PUBACK
			r.acks <- struct{}{}
		}
		if len(pubacks) > 0 && r.br.Buffered() == 0 {
			r.wmu.Lock()
			_, err := r.c.Write(pubacks)
			r.wmu.Unlock()
			pubacks = pubacks[:0]
			if err != nil {
				r.err.Store(err)
				return
			}
		}
	}
}

func (r *rawConn) subscribe(filter string, qos byte, timeout time.Duration) error {
	body := append(append([]byte{0, 1}, mqttStr(filter)...), qos)
	r.wmu.Lock()
	_, err := r.c.Write(packetOf(0x82, body))
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	select {
	case code := <-r.subacks:
		if code >= 0x80 {
			return fmt.Errorf("subscribe %s refused (SUBACK 0x%02x)", filter, code)
		}
		return nil
	case <-r.done:
		return fmt.Errorf("subscribe %s: connection closed: %v", filter, r.err.Load())
	case <-time.After(timeout):
		return errors.New("SUBACK timed out")
	}
}

// publish is publish() for a raw connection: as fast as the broker reads (or at o.rate), QoS 0 in
// batches of up to 64 packets a write, QoS 1 with at most o.inflight unacknowledged.
func (r *rawConn) publish(ctx context.Context, topicBase string, runID uint32, o pubsubOptions, timeout time.Duration) (int64, error) {
	topics := make([][]byte, max(o.topics, 1))
	for i := range topics {
		topics[i] = mqttStr(fmt.Sprintf("%s/t%d", topicBase, i))
	}
	size := max(o.size, headerLen)
	window := max(o.inflight, 1)
	pace := newPacer(o.rate)
	const batchMax = 64
	var buf []byte
	var sent, acked int64
	inflight := 0
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		r.wmu.Lock()
		_, err := r.c.Write(buf)
		r.wmu.Unlock()
		buf = buf[:0]
		return err
	}
	takeAcks := func(block bool) error {
		for inflight > 0 {
			if !block {
				select {
				case <-r.acks:
					inflight--
					acked++
					continue
				default:
					return nil
				}
			}
			select {
			case <-r.acks:
				inflight--
				acked++
				block = false // one was enough; take the rest that are there
			case <-r.done:
				return fmt.Errorf("connection closed: %v", r.err.Load())
			case <-time.After(timeout):
				return errors.New("publish not acknowledged in time")
			}
		}
		return nil
	}
	pid := uint16(0)
	inBatch := 0
	var err error
	for seq := uint64(0); o.count == 0 || seq < uint64(o.count); seq++ {
		if ctx.Err() != nil {
			break
		}
		if err = pace.wait(ctx, flush); err != nil {
			break
		}
		if o.qos > 0 {
			if err = takeAcks(false); err != nil {
				break
			}
			if inflight >= window {
				if err = flush(); err != nil {
					break
				}
				if err = takeAcks(true); err != nil {
					break
				}
			}
		}
		topic := topics[seq%uint64(len(topics))]
		rem := len(topic) + size
		first := byte(0x30)
		if o.qos > 0 {
			rem += 2
			first = 0x32
		}
		buf = append(buf, first)
		buf = mqttwire.AppendVarint(buf, rem)
		buf = append(buf, topic...)
		if o.qos > 0 {
			pid++
			if pid == 0 {
				pid = 1
			}
			buf = binary.BigEndian.AppendUint16(buf, pid)
			inflight++
		}
		start := len(buf)
		buf = append(buf, make([]byte, size)...)
		p := buf[start:]
		copy(p, magic[:])
		binary.BigEndian.PutUint32(p[4:], runID)
		binary.BigEndian.PutUint64(p[8:], uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(p[16:], seq)
		inBatch++
		if o.qos == 0 {
			sent++
		}
		if inBatch >= batchMax || pace.paced() {
			if err = flush(); err != nil {
				break
			}
			inBatch = 0
		}
	}
	if ferr := flush(); err == nil {
		err = ferr
	}
	if o.qos > 0 {
		for inflight > 0 && err == nil {
			err = takeAcks(true)
		}
		return acked, err
	}
	return sent, err
}

func (r *rawConn) close() {
	r.wmu.Lock()
	_, _ = r.c.Write([]byte{0xe0, 0})
	r.wmu.Unlock()
	r.c.Close()
	<-r.done
}

func mqttStr(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func packetOf(first byte, body []byte) []byte {
	return append(mqttwire.AppendVarint([]byte{first}, len(body)), body...)
}
