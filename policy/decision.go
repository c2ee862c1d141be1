package policy

import "strings"

// Action names the broker and the CLI pass in [Request.Action]. Any other
// action string is accepted too; matching is case-insensitive, as in IAM.
const (
	ActionConnect       = "iot:Connect"
	ActionPublish       = "iot:Publish"
	ActionSubscribe     = "iot:Subscribe"
	ActionReceive       = "iot:Receive"
	ActionRetainPublish = "iot:RetainPublish"
	// GreengrassDiscover is the action the Greengrass discovery API checks.
	GreengrassDiscover = "greengrass:Discover"
)

// Resource kinds, the <kind> of arn:aws:iot:<region>:<account>:<kind>/<name>
// (reference/aws-iot-core/iot-action-resources.md).
const (
	KindClient      = "client"
	KindTopic       = "topic"
	KindTopicFilter = "topicfilter"
	KindThing       = "thing"
)

// Decision is the outcome of an evaluation. The zero value is ImplicitDeny so
// that a forgotten or failed evaluation denies.
type Decision uint8

const (
	// ImplicitDeny: no statement allowed the request (and none denied it).
	ImplicitDeny Decision = iota
	// Allowed: at least one statement allowed it and none denied it.
	Allowed
	// ExplicitDeny: a Deny statement matched; it beats every Allow.
	ExplicitDeny
)

// String returns the value AWS IoT's TestAuthorization API uses, so that
// logs and `ggbroker policy check` read like the AWS console.
func (d Decision) String() string {
	switch d {
	case Allowed:
		return "ALLOWED"
	case ExplicitDeny:
		return "EXPLICIT_DENY"
	default:
		return "IMPLICIT_DENY"
	}
}

// Diagnostic says what decided, so that a log line or the policy-check
// command can name the statement, the top complaint of people who debug AWS
// IoT policies.
type Diagnostic struct {
	// Policy is the name of the deciding policy ("" when nothing matched).
	Policy string
	// Statement is the 0-based index of the deciding statement, -1 when no
	// statement decided (implicit deny, or a rule Greengrass applies without
	// a statement, such as iot:Receive being always allowed).
	Statement int
	// Sid is the statement's Sid, or the statement key of a Greengrass
	// policy, "" if none.
	Sid string
	// Reason is a sentence for humans.
	Reason string
	// Unresolved lists the policy variables, as written, that could not be
	// resolved in statements that were about the requested action (for
	// example "${iot:Connection.Thing.ThingName}" when the client is not an
	// attached thing). It is only filled in on an implicit deny.
	Unresolved []string
}

// String is Reason followed by the unresolved variables, if any.
func (d Diagnostic) String() string {
	if len(d.Unresolved) == 0 {
		return d.Reason
	}
	return d.Reason + " (unresolved policy variables: " + strings.Join(d.Unresolved, ", ") + ")"
}

// reasonNoStatement is the Reason of every implicit deny.
const reasonNoStatement = "no statement allowed it"
