package policy

import (
	"fmt"
	"strings"
	"time"
)

// Env names the partition, region and account that resource ARNs are in:
// arn:<Partition>:iot:<Region>:<AccountID>:<kind>/<name>.
type Env struct {
	Region, AccountID string
	// Partition is "aws" when empty ("aws-cn", "aws-us-gov" elsewhere).
	Partition string
}

// base is "arn:aws:iot:<region>:<account>:".
func (e Env) base() string {
	part := e.Partition
	if part == "" {
		part = "aws"
	}
	return "arn:" + part + ":iot:" + e.Region + ":" + e.AccountID + ":"
}

// Request is one question: may this connection do Action on this resource?
type Request struct {
	// Action such as "iot:Publish"; matched case-insensitively.
	Action string
	// Kind and Name give the resource as the broker knows it: the ARN is
	// arn:aws:iot:<Region>:<AccountID>:<Kind>/<Name>, but it is never built.
	// Name is the MQTT topic, filter or client ID as is.
	Kind, Name string
	// ARN is the alternative to Kind/Name, used when Kind is "" (the CLI).
	ARN string
	// Context is the connection; nil resolves no variable and no key.
	Context *Context
	// Now is the time for aws:CurrentTime and aws:EpochTime; zero means
	// time.Now(), read only if a condition needs it.
	Now time.Time
}

// Set is the compiled union of the policies that apply to one principal:
// all the policies attached to its certificate, or all the Greengrass
// policies of its device groups. It is immutable and safe for concurrent
// use; build a new Set when policies change.
type Set struct {
	env      Env
	base     string
	policies []*Policy
	// kindPrefix are the ARN prefixes of the known kinds, built once.
	kindPrefix [len(knownKinds)]string
	// byAction lists, for each known action, the statements about it:
	// Deny statements first, so that the first match decides.
	byAction [][]*statement
	// all lists every statement, denies first, for other actions.
	all []*statement
	// timed: a statement's decision depends on the time (aws:CurrentTime, aws:EpochTime).
	timed bool
}

var knownKinds = [...]string{KindClient, KindTopic, KindTopicFilter, KindThing}

// greengrassPrefix maps a kind onto the resource form of Greengrass client
// device auth: mqtt:clientId:<id>, mqtt:topic:<topic>,
// mqtt:topicfilter:<filter> (reference/greengrass-v2/client-device-auth-component.md).
var greengrassPrefix = [len(knownKinds)]string{"mqtt:clientId:", "mqtt:topic:", "mqtt:topicfilter:", ""}

func kindIndex(kind string) int {
	switch kind {
	case KindTopic:
		return 1
	case KindTopicFilter:
		return 2
	case KindClient:
		return 0
	case KindThing:
		return 3
	}
	return -1
}

// NewSet compiles the union of policies for evaluation in env. Nil policies
// are skipped.
func NewSet(env Env, policies ...*Policy) *Set {
	s := &Set{env: env, base: env.base()}
	for i, k := range knownKinds {
		s.kindPrefix[i] = s.base + k + "/"
	}
	var denies, allows []*statement
	for _, p := range policies {
		if p == nil {
			continue
		}
		s.policies = append(s.policies, p)
		for _, st := range p.statements {
			s.timed = s.timed || st.timeDependent()
			if st.deny {
				denies = append(denies, st)
			} else {
				allows = append(allows, st)
			}
		}
	}
	s.all = append(denies, allows...)
	s.byAction = make([][]*statement, len(knownActions))
	for i := range knownActions {
		for _, st := range s.all {
			if st.appliesToAction(i) {
				s.byAction[i] = append(s.byAction[i], st)
			}
		}
	}
	return s
}

// Stable reports whether the Set decides a request the same way whenever it is asked with the same
// Context: no statement reads the time (aws:CurrentTime, aws:EpochTime). A caller may then keep a
// decision for as long as it keeps the Set and the Context.
func (s *Set) Stable() bool { return s != nil && !s.timed }

// Env is the environment the Set was built for.
func (s *Set) Env() Env { return s.env }

// Policies are the policies of the Set, in the order given to NewSet.
func (s *Set) Policies() []*Policy { return s.policies }

// subjects are the request's resource in the two forms: the IoT ARN, and
// the Greengrass mqtt:<type>:<name> (ggOK false when the resource has no
// Greengrass form).
type subjects struct {
	iot  subject
	gg   subject
	ggOK bool
}

func (s *Set) subjects(req *Request) subjects {
	var sub subjects
	if req.Kind != "" {
		if k := kindIndex(req.Kind); k >= 0 {
			sub.iot = subject{a: s.kindPrefix[k], b: req.Name}
			sub.gg = subject{a: greengrassPrefix[k], b: req.Name}
			sub.ggOK = greengrassPrefix[k] != ""
		} else {
			sub.iot = subject{a: s.base + req.Kind + "/", b: req.Name}
		}
		return sub
	}
	sub.iot = subject{b: req.ARN}
	// arn:partition:iot:region:account:kind/name
	if parts := splitARN(req.ARN, false); len(parts) == 6 {
		if kind, name, ok := strings.Cut(parts[5], "/"); ok {
			if k := kindIndex(kind); k >= 0 && greengrassPrefix[k] != "" {
				sub.gg = subject{a: greengrassPrefix[k], b: name}
				sub.ggOK = true
			}
		}
	}
	return sub
}

// Evaluate decides a request. An explicit Deny in any policy beats every
// Allow; without an Allow the answer is ImplicitDeny. On Allowed the
// Diagnostic is prebuilt and nothing is allocated.
func (s *Set) Evaluate(req Request) (Decision, Diagnostic) {
	if s == nil {
		return ImplicitDeny, Diagnostic{Statement: -1, Reason: reasonNoStatement}
	}
	c := req.Context
	if c == nil {
		c = &emptyContext
	}
	ai := actionIndex(req.Action)
	list := s.all
	if ai >= 0 {
		list = s.byAction[ai]
	}
	sub := s.subjects(&req)
	e := evalEnv{set: s, now: req.Now, noThing: isGreengrassAction(req.Action)}
	for _, st := range list {
		if ai < 0 && !st.actionApplies(req.Action) {
			continue
		}
		if !st.applies(&sub, c, &e) {
			continue
		}
		if st.deny {
			return ExplicitDeny, Diagnostic{
				Policy: st.policy.name, Statement: st.index, Sid: st.sid,
				Reason: fmt.Sprintf("%s explicitly denies %s on %s", st.desc, req.Action, sub.iot.a+sub.iot.b),
			}
		}
		return Allowed, st.allow
	}
	return ImplicitDeny, s.implicitDeny(list, ai, &req, c, &e)
}

// implicitDeny builds the Diagnostic of an implicit deny: which variables
// of the statements about this action did not resolve. It allocates; it is
// off the allow path.
func (s *Set) implicitDeny(list []*statement, ai int, req *Request, c *Context, e *evalEnv) Diagnostic {
	d := Diagnostic{Statement: -1, Reason: reasonNoStatement}
	seen := map[string]bool{}
	add := func(refs []*ref) {
		for _, r := range refs {
			if _, ok := c.lookupVar(r, e); !ok && !seen[r.text] {
				seen[r.text] = true
				d.Unresolved = append(d.Unresolved, r.text)
			}
		}
	}
	thingVars := false
	for _, st := range list {
		if ai < 0 && !st.actionApplies(req.Action) {
			continue
		}
		add(st.resRefs)
		add(st.condRefs)
		thingVars = thingVars || st.thingVars
	}
	if e.noThing && thingVars {
		d.Reason = reasonNoStatement + ": thing policy variables (iot:Connection.Thing.*) are not supported for greengrass: actions, so the statements that use them do not match, as in AWS; use a wildcard such as thing/MyGreengrassDevice*"
	}
	return d
}

// isGreengrassAction reports whether the action is in the greengrass: namespace, without allocating.
func isGreengrassAction(a string) bool {
	const prefix = "greengrass:"
	return len(a) > len(prefix) && strings.EqualFold(a[:len(prefix)], prefix)
}

// applies reports whether the statement matches the resource and its
// conditions hold. As in IAM, a variable that cannot be resolved makes the
// Resource entry it is in match nothing; in a NotResource or a condition
// value it makes the whole statement not apply, so a Deny with an
// unresolved variable denies nothing (IAM, "Policy variables": "If AWS
// cannot resolve a variable, this might cause the entire statement to be
// invalid").
func (st *statement) applies(sub *subjects, c *Context, e *evalEnv) bool {
	if e.noThing && st.thingVars {
		return false // the statement does not match, as in AWS (see evalEnv.noThing)
	}
	if !st.anyResource {
		s := sub.iot
		if st.greengrass {
			if !sub.ggOK {
				return false
			}
			s = sub.gg
		}
		if st.notResource {
			for _, r := range st.resRefs {
				if _, ok := c.lookupVar(r, e); !ok {
					return false
				}
			}
			for i := range st.resources {
				if st.resources[i].match(s, false, c, e) {
					return false
				}
			}
		} else {
			matched := false
			for i := range st.resources {
				if st.resources[i].match(s, false, c, e) {
					matched = true
					break
				}
			}
			if !matched {
				return false
			}
		}
	}
	if len(st.conds) == 0 {
		return true
	}
	for _, r := range st.condRefs {
		if _, ok := c.lookupVar(r, e); !ok {
			return false
		}
	}
	for i := range st.conds {
		if !st.conds[i].eval(c, e) {
			return false
		}
	}
	return true
}

// ExpandResource turns the short forms client/ID, topic/T, topicfilter/F
// and thing/NAME into full ARNs in env, as `ggbroker policy check
// --resource` accepts them. A full ARN (arn:...) passes through unchanged,
// and so does "*", the resource of actions such as iot:ListRetainedMessages
// ("The resource ARN specified for this action must be *",
// aws-iot-core/iot-policy-actions.md).
func ExpandResource(env Env, s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	if strings.HasPrefix(s, "arn:") {
		if len(splitARN(s, false)) != 6 {
			return "", fmt.Errorf("resource %q: an ARN has six colon-separated parts (arn:aws:iot:region:account:kind/name)", s)
		}
		return s, nil
	}
	kind, name, ok := strings.Cut(s, "/")
	if !ok || kindIndex(kind) < 0 {
		return "", fmt.Errorf("resource %q: want an ARN or client/ID, topic/TOPIC, topicfilter/FILTER or thing/NAME", s)
	}
	if name == "" {
		return "", fmt.Errorf("resource %q: empty %s name", s, kind)
	}
	return env.base() + s, nil
}
