package mqtt

import (
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// outQueue is a client's queue of packets waiting for its writer (ggbroker patch). Upstream used a
// channel of MaximumClientWritesPending pointers, made at connect: 8 KiB per connection at 1,024,
// whether it ever queued anything or not, the largest heap item of an idle connection. This ring
// grows on demand up to max and goes back to nothing once it is empty again after a burst.
type outQueue struct {
	mu    sync.Mutex
	items []*packets.Packet // a ring: n items from head
	head  int
	n     int
	max   int
	// ready (capacity 1) gets a token when the queue stops being empty, for WriteLoop to wait on.
	ready chan struct{}
	// room, made by the first waiter, is closed by the next pop.
	room chan struct{}
}

// outQueueKeep is the capacity an emptied queue keeps; a larger one is given back.
const outQueueKeep = 16

func newOutQueue(max int) *outQueue {
	return &outQueue{max: max, ready: make(chan struct{}, 1)}
}

// push adds pk unless the queue holds max packets already.
func (q *outQueue) push(pk *packets.Packet) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.max {
		return false
	}
	if q.n == len(q.items) {
		grown := make([]*packets.Packet, min(max(2*len(q.items), 4), q.max))
		for i := 0; i < q.n; i++ {
			grown[i] = q.items[(q.head+i)%len(q.items)]
		}
		q.items, q.head = grown, 0
	}
	q.items[(q.head+q.n)%len(q.items)] = pk
	q.n++
	if q.n == 1 { // WriteLoop drains until empty: it needs a token only when the queue stops being empty
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// pop takes the oldest packet.
func (q *outQueue) pop() (*packets.Packet, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil, false
	}
	pk := q.items[q.head]
	q.items[q.head] = nil
	q.head = (q.head + 1) % len(q.items)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.items) > outQueueKeep {
			q.items = nil
		}
	}
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
	return pk, true
}

// len is the number of packets queued.
func (q *outQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// roomSignal returns a channel the next pop closes.
func (q *outQueue) roomSignal() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.room == nil {
		q.room = make(chan struct{})
	}
	return q.room
}
