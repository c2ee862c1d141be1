// Package boltcommit is group commit for bbolt: many goroutines' write functions share one fsynced
// transaction. A lone writer waits for its own commit only (no batching delay, unlike bbolt's DB.Batch
// and its MaxBatchDelay); under load the batch grows with the load.
package boltcommit

import (
	"errors"
	"runtime"
	"sync"

	"go.etcd.io/bbolt"
)

// ErrClosed is a write after Close.
var ErrClosed = errors.New("database is closed")

// Committer runs write functions in shared transactions. Create it with New; Close stops it.
type Committer struct {
	db *bbolt.DB

	mu      sync.Mutex
	pending []*op
	closed  bool
	wake    chan struct{} // capacity 1: there are pending ops
	stopped chan struct{}
}

type op struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

// New starts a committer on db.
func New(db *bbolt.DB) *Committer {
	c := &Committer{db: db, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go c.run()
	return c
}

// Update runs fn in a write transaction shared with whatever other writers queued meanwhile, and
// returns once that transaction is committed and fsynced. fn's error fails fn's own change only: the
// others are committed without it. fn may run more than once, so it must change nothing but the Tx.
func (c *Committer) Update(fn func(*bbolt.Tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.pending = append(c.pending, o)
	select { // under mu: Close cannot have closed wake
	case c.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
	return <-o.done
}

// Close commits what is queued and stops the committer; later writes get ErrClosed. The database
// stays open (it is the caller's).
func (c *Committer) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.wake)
	c.mu.Unlock()
	<-c.stopped
}

// run commits what is pending, one transaction after the other. When the last transaction had more
// than one writer (concurrent writers, so the CPU is likely busy), it yields once before it takes the
// next batch: goroutines already runnable that are about to write join this transaction instead of
// the next one. Each commit costs two fdatasyncs and their CPU whatever its size; with 100 devices
// updating their shadows the batches grew from 6 to 10-13 writes. A lone writer (last batch of one)
// is committed at once, as before.
func (c *Committer) run() {
	defer close(c.stopped)
	last := 0
	for {
		_, open := <-c.wake
		if last > 1 {
			runtime.Gosched()
		}
		c.mu.Lock()
		batch := c.pending
		c.pending = nil
		c.mu.Unlock()
		last = len(batch)
		if len(batch) > 0 {
			c.commit(batch)
		}
		if !open {
			return
		}
	}
}

// failed marks the op whose function failed, so that the batch is retried without it.
type failed struct {
	i   int
	err error
}

func (f *failed) Error() string { return f.err.Error() }

func (c *Committer) commit(batch []*op) {
	for len(batch) > 0 {
		err := c.db.Update(func(tx *bbolt.Tx) error {
			for i, o := range batch {
				if err := o.fn(tx); err != nil {
					return &failed{i: i, err: err}
				}
			}
			return nil
		})
		var f *failed
		if errors.As(err, &f) {
			batch[f.i].done <- f.err
			batch = append(batch[:f.i:f.i], batch[f.i+1:]...)
			continue
		}
		for _, o := range batch {
			o.done <- err
		}
		return
	}
}
