// Package ids makes the random identifiers ggbroker's records and events carry, in the forms AWS IoT
// uses, so that tools which parse AWS' logs and events parse ggbroker's too.
package ids

import (
	"crypto/rand"
	"encoding/hex"
)

// TraceID is a log record's or error answer's traceId: a random UUID-shaped string.
func TraceID() string {
	h := Hex16()
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Hex16 is 16 random bytes in hex (32 characters): the form of a lifecycle event's sessionIdentifier.
func Hex16() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
