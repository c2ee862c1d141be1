package broker

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// An idle MQTT connection should cost as little as possible: a gateway holds thousands of devices
// that send a PINGREQ a minute. A goroutine blocked in tls.Conn.Read parks under a dozen frames
// (the record layer, net, poll), which keeps its stack at 8 KiB, and mochi's read buffer stays
// allocated. idleTLSConn lets mochi's read loop (mqtt.IdleWaiter) instead wait for the socket to
// become readable with a shallow stack and no buffer of its own, when it can tell that nothing is
// buffered in between: in its read buffer (mochi checks), in crypto/tls's decrypted input (the last
// Read did not fill its buffer) and in crypto/tls's raw input (recordConn hands the TLS layer at
// most one record at a time, so at a record boundary it holds nothing).

// recordHeaderLen is the length of a TLS record header: type, version (2), length (2) (RFC 8446 §5.1).
const recordHeaderLen = 5

// socketBufferSize is the size of recordConn's socket read buffer, lent from socketBuffers only while
// it holds unread bytes: the largest TLS record (RFC 8446 §5.2: 2^14 + 256 bytes of ciphertext) and
// its header, so that a busy connection reads a whole record per system call.
const socketBufferSize = 1<<14 + 256 + recordHeaderLen

var socketBuffers = sync.Pool{New: func() any { b := make([]byte, socketBufferSize); return &b }}

// recordConn is the socket under a tls.Conn. It reads through a pooled buffer and returns from Read
// no byte past the end of the TLS record it is in, so the TLS layer never holds more than the record
// it is decrypting.
type recordConn struct {
	net.Conn
	buf  *[]byte // nil while nothing is buffered
	r, w int     // unread bytes: (*buf)[r:w]
	hdr  [recordHeaderLen]byte
	hn   int // bytes of the current record's header handed up so far; 0 at a record boundary
	body int // bytes of the current record's body not handed up yet (once hn == recordHeaderLen)
	// state says who may give buf back to the pool: Read while it runs, Close otherwise. A device
	// that disconnects sends DISCONNECT, close_notify and FIN together; mochi closes after the
	// DISCONNECT and never reads the rest, and without Close's release every connect left its 16 KiB
	// buffer to the garbage collector instead of the next connection (a cost a bare TLS handshake,
	// which reads to the end, does not have).
	state atomic.Int32
}

// recordConn states.
const (
	rcIdle int32 = iota
	rcReading
	rcClosed
)

// Close closes the socket and gives the buffer back, unless a Read is using it (that Read does).
func (c *recordConn) Close() error {
	err := c.Conn.Close()
	if c.state.Swap(rcClosed) == rcIdle {
		c.release()
	}
	return err
}

func (c *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !c.state.CompareAndSwap(rcIdle, rcReading) {
		return 0, net.ErrClosed // closed (a tls.Conn never reads from two goroutines at once)
	}
	n, err := c.read(p)
	if !c.state.CompareAndSwap(rcReading, rcIdle) {
		c.release() // closed while reading
	}
	return n, err
}

func (c *recordConn) read(p []byte) (int, error) {
	if c.buf == nil {
		c.buf = socketBuffers.Get().(*[]byte)
		n, err := c.Conn.Read(*c.buf)
		if n == 0 {
			c.release()
			return 0, err
		}
		// An error that came with data comes again from the next read.
		c.r, c.w = 0, n
	}
	avail := (*c.buf)[c.r:c.w]
	limit := min(len(avail), len(p))
	n := 0
	for n < limit {
		if c.hn < recordHeaderLen {
			c.hdr[c.hn] = avail[n]
			c.hn++
			n++
			if c.hn == recordHeaderLen {
				c.body = int(c.hdr[3])<<8 | int(c.hdr[4])
				if c.body == 0 {
					c.hn = 0
					break
				}
			}
			continue
		}
		k := min(c.body, limit-n)
		n += k
		if c.body -= k; c.body == 0 {
			c.hn = 0 // the record is complete: stop at its end
		}
		break
	}
	copy(p, avail[:n])
	if c.r += n; c.r == c.w {
		c.release()
	}
	return n, nil
}

func (c *recordConn) release() {
	if c.buf != nil {
		socketBuffers.Put(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// atBoundary reports whether everything read from the socket has been handed up and ended a record.
func (c *recordConn) atBoundary() bool { return c.buf == nil && c.hn == 0 }

// tlsState is what the hooks read of a client's TLS connection (an idleTLSConn on the MQTT listeners).
type tlsState interface {
	ConnectionState() tls.ConnectionState
}

// idleTLSConn is a server-side TLS connection over a recordConn that implements mqtt.IdleWaiter.
type idleTLSConn struct {
	*tls.Conn
	rec *recordConn
	// full: the last Read filled its buffer, so crypto/tls may hold more of the record's plaintext.
	full bool
}

// newIdleTLSServer is tls.Server over a recordConn of raw.
func newIdleTLSServer(raw net.Conn, cfg *tls.Config) *idleTLSConn {
	rec := &recordConn{Conn: raw}
	return &idleTLSConn{Conn: tls.Server(rec, cfg), rec: rec}
}

func (c *idleTLSConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.full = n == len(p)
	return n, err
}

// WaitIdle waits for the socket to be readable when nothing is buffered above it (see the top of the
// file); otherwise it returns at once and the next Read gets what is buffered.
func (c *idleTLSConn) WaitIdle() error {
	if c.full || !c.rec.atBoundary() {
		return nil
	}
	return waitReadable(c.rec.Conn)
}
