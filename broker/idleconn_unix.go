//go:build unix

package broker

import (
	"errors"
	"net"
	"syscall"
)

// waitReadable parks until conn has input, an end of file or an error to read, or its read deadline
// passes (the error is then the one Read would return). The goroutine waits in the runtime's network
// poller, as a Read would, but with only this call's frames on its stack.
func waitReadable(conn net.Conn) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil // the next Read reports it
	}
	var peek [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// A byte to peek at, an end of file or an error: the next Read will not wait. EAGAIN: wait
		// for the poller to say the socket is readable, and look again.
		_, _, e := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(e, syscall.EAGAIN)
	})
	return err
}
