package shadow

import "strings"

// ID names one shadow: a thing's classic (unnamed) shadow when Name is "", else its named shadow.
type ID struct {
	Thing, Name string
}

// Limits on names (services/shadow.md §7: SM Validator, botocore's ThingName shape).
const (
	maxThingNameLen  = 128
	maxShadowNameLen = 64
)

// validName reports whether s is 1..max characters of [a-zA-Z0-9:_-].
func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ':', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Validate refuses a thing or shadow name outside AWS' rules.
func (id ID) Validate() *Error {
	if !validName(id.Thing, maxThingNameLen) {
		return errBadName("thing name", id.Thing)
	}
	if id.Name != "" && !validName(id.Name, maxShadowNameLen) {
		return errBadName("shadow name", id.Name)
	}
	return nil
}

// Prefix is the shadow's MQTT topic prefix (aws-iot-core/device-shadow-mqtt.md): $aws/things/T/shadow
// for the classic shadow, $aws/things/T/shadow/name/N for a named one.
func (id ID) Prefix() string {
	if id.Name == "" {
		return "$aws/things/" + id.Thing + "/shadow"
	}
	return "$aws/things/" + id.Thing + "/shadow/name/" + id.Name
}

// key is the shadow's key in the store: "T/" for the classic shadow, "T/N" for a named one, so that a
// thing's shadows are one prefix ("T/"), and no thing's prefix is another's ('/' is in no name).
func (id ID) key() string { return id.Thing + "/" + id.Name }

// idFromKey is key's inverse.
func idFromKey(k string) ID {
	t, n, _ := strings.Cut(k, "/")
	return ID{Thing: t, Name: n}
}

// Operation is one of the three requests a shadow answers.
type Operation string

const (
	OpGet    Operation = "get"
	OpUpdate Operation = "update"
	OpDelete Operation = "delete"
)

// EventType is the operation's eventType in log records, as AWS' Device Shadow log entries name them
// (aws-iot-core/cwl-format.md, "Device Shadow log entries").
func (op Operation) EventType() string {
	switch op {
	case OpGet:
		return "GetThingShadow"
	case OpUpdate:
		return "UpdateThingShadow"
	default:
		return "DeleteThingShadow"
	}
}

// requestFilters are the topic filters the service handles: the request topics only, never the
// response topics (a client publishing to .../update/accepted is ordinary traffic, services/shadow.md §1).
var requestFilters = []string{
	"$aws/things/+/shadow/get", "$aws/things/+/shadow/update", "$aws/things/+/shadow/delete",
	"$aws/things/+/shadow/name/+/get", "$aws/things/+/shadow/name/+/update", "$aws/things/+/shadow/name/+/delete",
}

// ParseRequestTopic splits a request topic, $aws/things/T/shadow[/name/N]/{get,update,delete}, into the
// shadow and the operation; ok is false for any other topic (response topics included).
func ParseRequestTopic(topic string) (id ID, op Operation, ok bool) {
	rest, found := strings.CutPrefix(topic, "$aws/things/")
	if !found {
		return ID{}, "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 3 && parts[1] == "shadow":
		id = ID{Thing: parts[0]}
		op = Operation(parts[2])
	case len(parts) == 5 && parts[1] == "shadow" && parts[2] == "name":
		id = ID{Thing: parts[0], Name: parts[3]}
		op = Operation(parts[4])
	default:
		return ID{}, "", false
	}
	switch op {
	case OpGet, OpUpdate, OpDelete:
	default:
		return ID{}, "", false
	}
	if id.Thing == "" || (len(parts) == 5 && id.Name == "") {
		return ID{}, "", false
	}
	return id, op, true
}
