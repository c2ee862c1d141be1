package mqtt

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// deferHook defers every QoS 1 PUBACK to a wait the test releases.
type deferHook struct {
	HookBase
	waits chan chan error
}

func (h *deferHook) ID() string           { return "defer" }
func (h *deferHook) Provides(b byte) bool { return b == OnPublish }
func (h *deferHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 1 {
		ch := make(chan error, 1)
		h.waits <- ch
		cl.DeferAck(func() error { return <-ch })
	}
	return pk, nil
}

// TestDeferAck (patch 43): the read loop goes on while a PUBACK waits for its hook; PUBACKs go out
// in the order of their PUBLISHes, each once its wait returned; a failed wait gives MQTT 5 PUBACK
// 0x80.
func TestDeferAck(t *testing.T) {
	s := newTestServer(t)
	h := &deferHook{waits: make(chan chan error, 10)}
	if err := s.AddHook(&allowAll{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	cl, conn := newTestClient(t, s, "pub")
	cl.State.Inflight.ResetReceiveQuota(100) // as a CONNECT sets it
	acks := make(chan packets.Packet, 10)
	go func() {
		r := bufio.NewReader(conn)
		for {
			fh := new(packets.FixedHeader)
			b, err := r.ReadByte()
			if err != nil {
				return
			}
			if err := fh.Decode(b); err != nil {
				return
			}
			n, _, err := packets.DecodeLength(r)
			if err != nil {
				return
			}
			body := make([]byte, n)
			if _, err := r.Read(body); err != nil && n > 0 {
				return
			}
			pk := packets.Packet{FixedHeader: *fh, ProtocolVersion: 5}
			pk.FixedHeader.Remaining = n
			if err := pk.PubackDecode(body); err != nil {
				return
			}
			acks <- pk
		}
	}()
	publish := func(id uint16) chan error {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.processPublish(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: id, ProtocolVersion: 5})
		}()
		select {
		case <-done: // the read loop was not held up by the wait
		case <-time.After(5 * time.Second):
			t.Fatalf("PUBLISH %d: processPublish waited for the deferred acknowledgement", id)
		}
		select {
		case w := <-h.waits:
			return w
		case <-time.After(5 * time.Second):
			t.Fatalf("PUBLISH %d: the hook was not asked", id)
			return nil
		}
	}
	w1, w2, w3 := publish(1), publish(2), publish(3)
	w2 <- nil // the second is ready first: it must still wait for the first
	select {
	case a := <-acks:
		t.Fatalf("PUBACK %d sent before PUBACK 1's wait returned", a.PacketID)
	case <-time.After(100 * time.Millisecond):
	}
	w1 <- nil
	w3 <- errors.New("disk full")
	for i, want := range []struct {
		id   uint16
		code byte
	}{{1, 0}, {2, 0}, {3, packets.ErrUnspecifiedError.Code}} {
		select {
		case a := <-acks:
			if a.PacketID != want.id || a.ReasonCode != want.code {
				t.Fatalf("acknowledgement %d: PUBACK %d code 0x%02x, want %d code 0x%02x", i, a.PacketID, a.ReasonCode, want.id, want.code)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("acknowledgement %d (PUBACK %d) not sent", i, want.id)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); cl.State.Inflight.Len() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledgements still inflight", cl.State.Inflight.Len())
		}
	}
	if q, max := atomic.LoadInt32(&cl.State.Inflight.receiveQuota), atomic.LoadInt32(&cl.State.Inflight.maximumReceiveQuota); q != max {
		t.Fatalf("receive quota %d after every PUBACK, want %d", q, max)
	}
}

// TestInlinePublishesFromManyGoroutines: the inline client publishes from many goroutines at once
// (ggbroker's lifecycle events, its services); its messages are never acknowledged, so the deferred
// acknowledgement state of patch 43 must not be touched for it (go test -race found the write).
func TestInlinePublishesFromManyGoroutines(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InlineClient: true})
	t.Cleanup(func() { close(s.done) })
	if err := s.AddHook(&allowAll{}, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := s.Publish("events/x", []byte("e"), false, 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(s.inlineClient.State.ackAfter); n != 0 {
		t.Fatalf("the inline client holds %d deferred acknowledgements", n)
	}
}
