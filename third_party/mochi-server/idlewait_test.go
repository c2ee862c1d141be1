// SPDX-License-Identifier: MIT
// ggbroker patch: tests of the idle wait (idlewait.go).

package mqtt

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// idleConn is a net.Pipe end that is an IdleWaiter: WaitIdle records whether the client still held a
// read buffer, then waits for the test to let it go on.
type idleConn struct {
	net.Conn
	cl      atomic.Pointer[Client]
	waits   atomic.Int64
	heldBuf atomic.Int64 // waits during which the client held a read buffer
	release chan struct{}
}

func (c *idleConn) WaitIdle() error {
	c.waits.Add(1)
	if cl := c.cl.Load(); cl != nil && cl.Net.bconn != nil {
		c.heldBuf.Add(1)
	}
	<-c.release
	return nil
}

func TestIdleClientHoldsNoReadBuffer(t *testing.T) {
	s := newTestServer(t)
	c, r := net.Pipe()
	defer r.Close()
	ic := &idleConn{Conn: c, release: make(chan struct{}, 16)}
	cl := s.NewClient(ic, "t", "idle", false)
	ic.cl.Store(cl)
	cl.Properties.ProtocolVersion = 4
	if cl.Net.idle == nil {
		t.Fatal("a connection that is an IdleWaiter is not waited on")
	}

	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- cl.Read(func(cl *Client, pk packets.Packet) error {
			if pk.FixedHeader.Type == packets.Pingreq {
				got.Add(1)
			}
			return nil
		})
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	// Idle from the start: the read loop waits without its buffer.
	waitFor("the first wait", func() bool { return ic.waits.Load() == 1 })

	// Two PINGREQs written in one go are read with one wait: the second is in the buffer already.
	ic.release <- struct{}{}
	if _, err := r.Write([]byte{0xc0, 0x00, 0xc0, 0x00}); err != nil {
		t.Fatal(err)
	}
	waitFor("both PINGREQs", func() bool { return got.Load() == 2 })
	waitFor("the second wait", func() bool { return ic.waits.Load() == 2 })

	ic.release <- struct{}{}
	if _, err := r.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatal(err)
	}
	waitFor("the third PINGREQ", func() bool { return got.Load() == 3 })
	waitFor("the third wait", func() bool { return ic.waits.Load() == 3 })
	if n := ic.heldBuf.Load(); n != 0 {
		t.Errorf("the client held its read buffer during %d of %d waits", n, ic.waits.Load())
	}

	cl.Stop(nil)
	ic.release <- struct{}{}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the read loop did not end when the client stopped")
	}
}

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestRefreshDeadlineAtMostOncePerSlack: packets read in quick succession set the deadline once, and
// the deadline is never earlier than 1.5 keep-alive after the last packet [MQTT-3.1.2-22]; a new
// keep-alive or none at all takes effect at once.
func TestRefreshDeadlineAtMostOncePerSlack(t *testing.T) {
	s := newTestServer(t)
	c, r := net.Pipe()
	defer r.Close()
	dc := &deadlineConn{Conn: c}
	cl := s.NewClient(dc, "t", "deadline", false)
	window := 3 * time.Second // keep-alive 2 s
	var last time.Time
	for i := 0; i < 100; i++ {
		last = time.Now()
		cl.refreshDeadline(2)
	}
	if len(dc.set) != 1 {
		t.Fatalf("100 packets in a row set the deadline %d times, want 1", len(dc.set))
	}
	if got := dc.set[0]; got.Before(last.Add(window)) {
		t.Fatalf("deadline %v is before the keep-alive window after the last packet (%v)", got, last.Add(window))
	}
	time.Sleep(deadlineSlack(window) + 10*time.Millisecond)
	last = time.Now()
	cl.refreshDeadline(2)
	if len(dc.set) != 2 || dc.set[1].Before(last.Add(window)) {
		t.Fatalf("after the slack: deadlines %v, want a second one after %v", dc.set, last.Add(window))
	}
	cl.refreshDeadline(30)
	if len(dc.set) != 3 || dc.set[2].Before(time.Now().Add(45*time.Second)) {
		t.Fatalf("a new keep-alive did not set its deadline: %v", dc.set)
	}
	cl.refreshDeadline(0)
	if len(dc.set) != 4 || !dc.set[3].IsZero() {
		t.Fatalf("keep-alive 0 did not clear the deadline: %v", dc.set)
	}
}
