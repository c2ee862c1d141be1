// SPDX-License-Identifier: MIT
// ggbroker patch: idle connections hold no read buffer and park with a small stack.

package mqtt

import (
	"bufio"
	"io"
	"sync"
)

// IdleWaiter is implemented by a connection that can wait for its next input with nothing of its
// own buffered and with a shallow stack (ggbroker patch). Client.Read calls WaitIdle before it reads
// the next packet whenever its read buffer is empty: the buffer goes back to the server's pool for
// the wait, and the goroutine parks in WaitIdle instead of deep inside a blocking Read (a TLS read
// parks under a dozen frames, which keeps an idle connection's stack from shrinking below 8 KiB).
//
// WaitIdle returns nil once input is ready, or at once when the connection cannot tell that nothing
// is buffered inside it (the next Read then blocks as usual); it returns an error when the
// connection failed, was closed or its read deadline passed, as Read would.
type IdleWaiter interface {
	WaitIdle() error
}

// readerPool holds the read buffers of clients between packets. A client whose connection is an
// IdleWaiter takes one when input arrives and gives it back when all of it is handled, so that of
// 10,000 idle connections none holds one.
type readerPool struct {
	p sync.Pool
}

func newReaderPool(size int) *readerPool {
	rp := &readerPool{}
	rp.p.New = func() any { return bufio.NewReaderSize(nil, size) }
	return rp
}

// get returns a reader of r with an empty buffer.
func (rp *readerPool) get(r io.Reader) *bufio.Reader {
	br := rp.p.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// put gives back a reader whose buffer is empty; it keeps no reference to its connection.
func (rp *readerPool) put(br *bufio.Reader) {
	br.Reset(nil)
	rp.p.Put(br)
}

// waitIdle parks the read loop until the next packet's first bytes are there, holding no read buffer
// meanwhile (see IdleWaiter). Its own frame is small on purpose: it is on the parked stack.
//
//go:noinline
func (cl *Client) waitIdle() error {
	rp := cl.ops.readers
	rp.put(cl.Net.bconn)
	cl.Net.bconn = nil
	err := cl.Net.idle.WaitIdle()
	cl.Net.bconn = rp.get(cl.Net.Conn)
	return err
}
