//go:build !unix

package broker

import "net"

// waitReadable does not wait where the socket cannot be polled without reading: the next Read does.
func waitReadable(net.Conn) error { return nil }
