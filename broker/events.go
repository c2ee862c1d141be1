package broker

// Events receives what the hooks observe, for metrics. Every method is called on hot paths (Decision
// and Dropped for every message): implementations must be cheap, lock-free and safe for concurrent use.
type Events interface {
	// Connected is a CONNECT accepted; Refused a CONNECT refused, with the refusal reason.
	Connected()
	Refused(reason string)
	// Disconnected is a connection that ended, with AWS' disconnectReason.
	Disconnected(reason string)
	// Decision is one authorization decision: action (iot:Publish ...) and whether it was allowed.
	Decision(action string, allowed bool)
	// Dropped is a message not delivered or not accepted, with why ("not-authorized", "throttled" ...).
	Dropped(reason string)
}
