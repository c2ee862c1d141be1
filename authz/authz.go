// Package authz decides what an authenticated client may do: the Authorizer interface between the
// broker's hooks (and the device services) and the policy engine, its Verdict, and the authorizers
// (AWS IoT policies or Greengrass device groups, the local listener's one policy, allow-all). It
// knows nothing of mochi.
package authz

import (
	"net/netip"
	"strings"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/policy"
)

// Session is what the broker knows of one authenticated client: built at CONNECT from the TLS state
// and kept while the MQTT session lives (also while a persistent session's device is offline), because
// messages are delivered to sessions that have no connection to read a certificate from.
type Session struct {
	Identity        *auth.Identity
	SourceIP        netip.Addr
	SourcePort      int
	ProtocolVersion byte
	// CleanStart is the CONNECT's clean session / clean start flag.
	CleanStart bool
	// WillTopic is the CONNECT's will topic, "" without a will.
	WillTopic  string
	WillRetain bool
	// ID is the sessionIdentifier of lifecycle events; Version their versionNumber.
	ID      string
	Version uint64
	// Authz is the Authorizer's own per-session state (a compiled policy context), set by Connect.
	Authz any
}

// Verdict is an Authorizer's answer. A denial carries what a log record needs: the action and
// resource asked for, the policy engine's decision and its Diagnostic (which policy and statement
// decided), or, for a rule of the behaviour profile, Refused and the rule.
type Verdict struct {
	Allowed    bool
	Action     string
	Resource   string
	Decision   policy.Decision
	Diagnostic policy.Diagnostic
	// Refused marks a refusal by a rule of the behaviour profile (a topic too long), not by a policy.
	Refused bool
	// Reason is the sentence for a person: the diagnostic, with any note (missing policies), or the rule.
	Reason string
}

// Allow is the verdict of an allowed request.
var Allow = Verdict{Allowed: true, Decision: policy.Allowed}

// RefusedBy is the verdict of a rule of the behaviour profile.
func RefusedBy(action, resource, rule string) Verdict {
	return Verdict{Action: action, Resource: resource, Decision: policy.ImplicitDeny, Refused: true, Reason: rule}
}

// DecisionName is the decision as log records and TestAuthorization name it: ALLOWED,
// EXPLICIT_DENY, IMPLICIT_DENY, or REFUSED for a profile rule.
func (v Verdict) DecisionName() string {
	if v.Refused {
		return "REFUSED"
	}
	return v.Decision.String()
}

// evaluate is the one decision path of every policy-backed authorizer: the engine's answer for one
// request, as a Verdict. note is appended to a denial's reason. It does not allocate when allowed.
func evaluate(set *policy.Set, env policy.Env, ctx *policy.Context, action, kind, name, note string) Verdict {
	d, diag := set.Evaluate(policy.Request{Action: action, Kind: kind, Name: name, Context: ctx})
	if d == policy.Allowed {
		return Allow
	}
	return Verdict{Action: action, Resource: expand(env, kind, name), Decision: d, Diagnostic: diag, Reason: diag.String() + note}
}

// unauthenticated is the verdict for a session the authorizer has no context for.
func unauthenticated(action, kind, name, why string) Verdict {
	return Verdict{Action: action, Resource: kind + "/" + name, Decision: policy.ImplicitDeny,
		Diagnostic: policy.Diagnostic{Statement: -1, Reason: why}, Reason: why}
}

// expand is a resource's ARN, or kind/name when it does not expand.
func expand(env policy.Env, kind, name string) string {
	arn, err := policy.ExpandResource(env, kind+"/"+name)
	if err != nil {
		return kind + "/" + name
	}
	return arn
}

// Authorizer decides what an authenticated client may do: the seam between the broker's mochi hooks
// and the policy engine. Receive is called for every message delivered to every subscriber, in the
// publisher's goroutine: it must be fast and must not allocate on the allow path.
type Authorizer interface {
	// Connect decides iot:Connect, and may set s.Authz for the session's later decisions.
	Connect(s *Session) Verdict
	// Publish decides iot:Publish on the topic (and iot:RetainPublish when retain is set).
	Publish(s *Session, topic string, retain bool) Verdict
	// Subscribe decides iot:Subscribe on one topic filter.
	Subscribe(s *Session, filter string) Verdict
	// Receive decides iot:Receive on the topic of a message about to be delivered to s.
	Receive(s *Session, topic string) Verdict
	// Decide decides any other action (iot:GetThingShadow, iotjobsdata:DescribeJobExecution ...) on a
	// resource given as "kind/name" ("thing/sensor-1") or as a full ARN, for the device services.
	Decide(s *Session, action, resource string) Verdict
}

// SplitResource turns "kind/name" or "arn:aws:iot:REGION:ACCOUNT:kind/name" into kind and name.
func SplitResource(resource string) (kind, name string) {
	if strings.HasPrefix(resource, "arn:") {
		if parts := strings.SplitN(resource, ":", 6); len(parts) == 6 {
			resource = parts[5]
		}
	}
	kind, name, _ = strings.Cut(resource, "/")
	return kind, name
}

// AllowAll lets every authenticated device do anything. It is the authorizer until policies are
// configured, and the baseline the policy engine is benchmarked against.
type AllowAll struct{}

func (AllowAll) Connect(*Session) Verdict                { return Allow }
func (AllowAll) Publish(*Session, string, bool) Verdict  { return Allow }
func (AllowAll) Subscribe(*Session, string) Verdict      { return Allow }
func (AllowAll) Receive(*Session, string) Verdict        { return Allow }
func (AllowAll) Decide(*Session, string, string) Verdict { return Allow }
