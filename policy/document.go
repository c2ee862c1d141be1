package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Policy is one compiled policy: an AWS IoT policy document or one policy
// of a Greengrass deviceGroups configuration. It is immutable and may be
// shared by any number of Sets.
type Policy struct {
	name       string
	greengrass bool
	statements []*statement
	warnings   []string // see Warnings
}

// Name is the name the policy was parsed with.
func (p *Policy) Name() string { return p.name }

// Len is the number of statements (for Greengrass, not counting the
// implicit Receive/RetainPublish allowance).
func (p *Policy) Len() int {
	n := 0
	for _, st := range p.statements {
		if st.index >= 0 {
			n++
		}
	}
	return n
}

// ParseError says why a policy was refused, and where.
type ParseError struct {
	Policy    string
	Statement int    // 0-based; -1 when the error is not about one statement
	Sid       string // the statement's Sid or Greengrass statement key, if known
	Reason    string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %q: ", e.Policy)
	if e.Statement >= 0 {
		fmt.Fprintf(&b, "statement %d", e.Statement)
		if e.Sid != "" {
			fmt.Fprintf(&b, " (%q)", e.Sid)
		}
		b.WriteString(": ")
	} else if e.Sid != "" {
		fmt.Fprintf(&b, "statement %q: ", e.Sid)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// statement is one compiled statement.
type statement struct {
	policy     *Policy
	index      int // -1 for rules Greengrass applies without a statement
	sid        string
	deny       bool
	greengrass bool

	notAction   bool
	actionNames []string  // as written, for Policy.Warnings
	actions     []pattern // lower case
	actionMask  uint64    // known actions the Action/NotAction list names

	notResource bool
	anyResource bool
	resources   []pattern
	resRefs     []*ref // variables of the resources

	conds    []condition
	condRefs []*ref // variables of the condition values
	// thingVars: a Resource, NotResource or Condition uses a thing policy variable or key
	// (iot:Connection.Thing.*), which AWS does not resolve for greengrass: actions.
	thingVars bool

	desc  string     // `statement 2 (Sid "X") of policy "P"`
	allow Diagnostic // prebuilt, so that an allow does not allocate
}

// timeDependent reports whether the statement reads the time: a condition on aws:CurrentTime or
// aws:EpochTime, or either as a variable.
func (st *statement) timeDependent() bool {
	timed := func(r *ref) bool { return r.id == keyCurrentTime || r.id == keyEpochTime }
	for i := range st.conds {
		if timed(&st.conds[i].key) {
			return true
		}
	}
	for _, r := range st.condRefs {
		if timed(r) {
			return true
		}
	}
	for _, r := range st.resRefs {
		if timed(r) {
			return true
		}
	}
	return false
}

// knownActions get a bit in statement.actionMask, so that the common
// actions are found without matching any pattern at evaluation time.
var knownActions = []string{
	ActionConnect, ActionPublish, ActionSubscribe, ActionReceive, ActionRetainPublish,
	"iot:GetRetainedMessage", "iot:ListRetainedMessages",
	"iot:DeleteThingShadow", "iot:GetThingShadow", "iot:UpdateThingShadow", "iot:ListNamedShadowsForThing",
	"iot:DescribeJobExecution", "iot:GetPendingJobExecutions", "iot:UpdateJobExecution",
	"iot:StartNextPendingJobExecution", "iot:AssumeRoleWithCertificate",
	GreengrassDiscover,
}

const (
	actConnect = iota
	actPublish
	actSubscribe
	actReceive
	actRetainPublish
)

// actionIndex finds a known action, case-insensitively as IAM does; -1 if
// the action is not one of knownActions.
func actionIndex(a string) int {
	switch a { // the broker's constants, without folding
	case ActionReceive:
		return actReceive
	case ActionPublish:
		return actPublish
	case ActionSubscribe:
		return actSubscribe
	case ActionConnect:
		return actConnect
	case ActionRetainPublish:
		return actRetainPublish
	}
	for i, k := range knownActions {
		if strings.EqualFold(a, k) {
			return i
		}
	}
	return -1
}

// actionApplies matches an action that is not in knownActions.
func (st *statement) actionApplies(action string) bool {
	m := false
	for i := range st.actions {
		if st.actions[i].literalMatch(action, true) {
			m = true
			break
		}
	}
	return m != st.notAction
}

func (st *statement) setActions(actions []string, not bool) error {
	st.notAction = not
	for _, a := range actions {
		p, err := compilePattern(strings.ToLower(a), patternOpts{wildcards: true})
		if err != nil {
			return err
		}
		st.actions = append(st.actions, p)
		for i, k := range knownActions {
			if p.literalMatch(strings.ToLower(k), false) {
				st.actionMask |= 1 << i
			}
		}
	}
	return nil
}

// appliesToAction reports whether the statement is about known action i.
func (st *statement) appliesToAction(i int) bool {
	return (st.actionMask&(1<<i) != 0) != st.notAction
}

func (st *statement) finish() {
	kind := "policy"
	if st.greengrass {
		kind = "Greengrass policy"
	}
	switch {
	case st.index < 0:
		st.desc = fmt.Sprintf("%s %q", kind, st.policy.name)
	case st.sid != "" && st.greengrass:
		st.desc = fmt.Sprintf("statement %d (%q) of %s %q", st.index, st.sid, kind, st.policy.name)
	case st.sid != "":
		st.desc = fmt.Sprintf("statement %d (Sid %q) of %s %q", st.index, st.sid, kind, st.policy.name)
	default:
		st.desc = fmt.Sprintf("statement %d of %s %q", st.index, kind, st.policy.name)
	}
	for i := range st.resources {
		st.resRefs = append(st.resRefs, st.resources[i].refs...)
	}
	for i := range st.conds {
		st.condRefs = append(st.condRefs, st.conds[i].refs...)
		st.thingVars = st.thingVars || st.conds[i].key.isThing()
	}
	for _, r := range append(append([]*ref(nil), st.resRefs...), st.condRefs...) {
		st.thingVars = st.thingVars || r.isThing()
	}
	st.allow = Diagnostic{Policy: st.policy.name, Statement: st.index, Sid: st.sid, Reason: st.desc + " allows it"}
}

// Policy versions. Only 2012-10-17 substitutes policy variables; with
// 2008-10-17, or no Version at all (which IAM reads as 2008-10-17), ${...}
// is literal text, as in IAM ("Policy variables ... are supported only in
// version 2012-10-17").
const (
	version2012 = "2012-10-17"
	version2008 = "2008-10-17"
)

// ParseDocument parses and compiles an AWS IoT policy document (JSON). A
// document AWS would refuse is refused, with a *ParseError naming the
// statement (0-based) and the reason.
func ParseDocument(name string, data []byte) (*Policy, error) {
	p := &Policy{name: name}
	fail := func(stmt int, sid, format string, args ...any) (*Policy, error) {
		return nil, &ParseError{Policy: name, Statement: stmt, Sid: sid, Reason: fmt.Sprintf(format, args...)}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return fail(-1, "", "invalid JSON: %v", err)
	}
	if top == nil {
		return fail(-1, "", "the document is not a JSON object")
	}
	for _, k := range sortedRawKeys(top) {
		switch k {
		case "Version", "Statement", "Id":
		default:
			return fail(-1, "", "unknown element %q (element names are case-sensitive: Version, Id, Statement)", k)
		}
	}
	version := version2008
	if raw, ok := top["Version"]; ok {
		if err := json.Unmarshal(raw, &version); err != nil {
			return fail(-1, "", "Version: %s, want a string", jsonType(raw))
		}
		if version != version2012 && version != version2008 {
			return fail(-1, "", "Version: %q is not a policy language version (want %q)", version, version2012)
		}
	}
	vars := version == version2012
	raw, ok := top["Statement"]
	if !ok {
		return fail(-1, "", "no Statement")
	}
	var stmts []json.RawMessage
	switch jsonType(raw) {
	case "object":
		stmts = []json.RawMessage{raw}
	case "list":
		if err := json.Unmarshal(raw, &stmts); err != nil {
			return fail(-1, "", "Statement: %v", err)
		}
	default:
		return fail(-1, "", "Statement: unknown type %s, want an object or a list of objects", jsonType(raw))
	}
	if len(stmts) == 0 {
		return fail(-1, "", "Statement: empty list")
	}
	actions := make([][]string, 0, len(stmts))
	for i, sraw := range stmts {
		st, sid, err := parseStatement(p, i, sraw, vars)
		if err != nil {
			return fail(i, sid, "%s", err.Error())
		}
		p.statements = append(p.statements, st)
		actions = append(actions, st.actionNames)
	}
	p.lint(actions)
	return p, nil
}

func parseStatement(p *Policy, i int, raw json.RawMessage, vars bool) (*statement, string, error) {
	st := &statement{policy: p, index: i}
	if jsonType(raw) != "object" {
		return nil, "", fmt.Errorf("unknown type %s, want an object", jsonType(raw))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", err
	}
	if v, ok := m["Sid"]; ok {
		if err := json.Unmarshal(v, &st.sid); err != nil {
			return nil, "", fmt.Errorf("Sid: unknown type %s, want a string", jsonType(v))
		}
	}
	for _, k := range sortedRawKeys(m) {
		switch k {
		case "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition":
		case "Principal", "NotPrincipal":
			return nil, st.sid, fmt.Errorf("%s: AWS IoT policies do not take a principal (the policy is attached to one)", k)
		default:
			return nil, st.sid, fmt.Errorf("unknown element %q (element names are case-sensitive)", k)
		}
	}
	var effect string
	if v, ok := m["Effect"]; !ok {
		return nil, st.sid, fmt.Errorf("no Effect")
	} else if err := json.Unmarshal(v, &effect); err != nil {
		return nil, st.sid, fmt.Errorf("Effect: unknown type %s, want a string", jsonType(v))
	}
	switch effect {
	case "Allow":
	case "Deny":
		st.deny = true
	default:
		return nil, st.sid, fmt.Errorf("Effect: %q, want \"Allow\" or \"Deny\"", effect)
	}

	act, hasAct := m["Action"]
	notAct, hasNotAct := m["NotAction"]
	switch {
	case hasAct && hasNotAct:
		return nil, st.sid, fmt.Errorf("both Action and NotAction")
	case !hasAct && !hasNotAct:
		return nil, st.sid, fmt.Errorf("no Action")
	}
	field, araw := "Action", act
	if hasNotAct {
		field, araw = "NotAction", notAct
	}
	actions, err := stringList(araw)
	if err != nil {
		return nil, st.sid, fmt.Errorf("%s: %v", field, err)
	}
	for _, a := range actions {
		if a != "*" && (strings.Count(a, ":") != 1 || strings.HasPrefix(a, ":") || strings.HasSuffix(a, ":")) {
			return nil, st.sid, fmt.Errorf("%s: %q is not an action (want vendor:action, e.g. iot:Publish, or *)", field, a)
		}
	}
	if err := st.setActions(actions, hasNotAct); err != nil {
		return nil, st.sid, fmt.Errorf("%s: %v", field, err)
	}
	st.actionNames = actions

	res, hasRes := m["Resource"]
	notRes, hasNotRes := m["NotResource"]
	switch {
	case hasRes && hasNotRes:
		return nil, st.sid, fmt.Errorf("both Resource and NotResource")
	case !hasRes && !hasNotRes:
		return nil, st.sid, fmt.Errorf("no Resource")
	}
	field, rraw := "Resource", res
	if hasNotRes {
		field, rraw = "NotResource", notRes
		st.notResource = true
	}
	resources, err := stringList(rraw)
	if err != nil {
		return nil, st.sid, fmt.Errorf("%s: %v", field, err)
	}
	for _, r := range resources {
		// IAM: "Resource must be in ARN format or "*"".
		if r != "*" && !strings.HasPrefix(r, "arn:") {
			return nil, st.sid, fmt.Errorf("%s: %q is not an ARN (arn:aws:iot:region:account:kind/name) or *", field, r)
		}
		pat, err := compilePattern(r, patternOpts{wildcards: true, variables: vars})
		if err != nil {
			return nil, st.sid, fmt.Errorf("%s: %v", field, err)
		}
		st.resources = append(st.resources, pat)
		if pat.any && !st.notResource {
			st.anyResource = true
		}
	}

	if c, ok := m["Condition"]; ok {
		if err := parseConditions(st, c, vars); err != nil {
			return nil, st.sid, fmt.Errorf("Condition: %v", err)
		}
	}
	st.finish()
	return st, st.sid, nil
}

func parseConditions(st *statement, raw json.RawMessage, vars bool) error {
	if jsonType(raw) != "object" {
		return fmt.Errorf("unknown type %s, want an object", jsonType(raw))
	}
	var ops map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ops); err != nil {
		return err
	}
	opNames := make([]string, 0, len(ops))
	for k := range ops {
		opNames = append(opNames, k)
	}
	sort.Strings(opNames)
	for _, op := range opNames {
		kraw := ops[op]
		if jsonType(kraw) != "object" {
			return fmt.Errorf("%s: unknown type %s, want an object of condition keys", op, jsonType(kraw))
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(kraw, &keys); err != nil {
			return fmt.Errorf("%s: %v", op, err)
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, key := range names {
			values, err := conditionValues(keys[key])
			if err != nil {
				return fmt.Errorf("%s: %s: %v", op, key, err)
			}
			cd, err := compileCondition(op, key, values, vars)
			if err != nil {
				return fmt.Errorf("%s: %v", key, err)
			}
			st.conds = append(st.conds, cd)
		}
	}
	return nil
}

// jsonType names the JSON type of raw, for error messages.
func jsonType(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '[':
		return "list"
	case '{':
		return "object"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// stringList reads a string or a non-empty list of strings, the two forms
// IAM accepts for Action and Resource.
func stringList(raw json.RawMessage) ([]string, error) {
	switch jsonType(raw) {
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []string{s}, nil
	case "list":
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return nil, fmt.Errorf("empty list")
		}
		out := make([]string, 0, len(items))
		for i, it := range items {
			if jsonType(it) != "string" {
				return nil, fmt.Errorf("item %d: unknown type %s, want a string", i, jsonType(it))
			}
			var s string
			if err := json.Unmarshal(it, &s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown type %s, want a string or a list of strings", jsonType(raw))
}

// conditionValues reads a condition's value or list of values; numbers and
// booleans are accepted and kept as their text, as IAM does. An empty list
// is valid (reference/aws-iot-core/connect-policy.md uses one).
func conditionValues(raw json.RawMessage) ([]string, error) {
	scalar := func(r json.RawMessage) (string, error) {
		switch jsonType(r) {
		case "string":
			var s string
			err := json.Unmarshal(r, &s)
			return s, err
		case "number", "boolean":
			return string(bytes.TrimSpace(r)), nil
		}
		return "", fmt.Errorf("unknown type %s, want a string, number or boolean", jsonType(r))
	}
	if jsonType(raw) == "list" {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		out := make([]string, 0, len(items))
		for i, it := range items {
			s, err := scalar(it)
			if err != nil {
				return nil, fmt.Errorf("item %d: %v", i, err)
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalar(raw)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// sortedRawKeys orders an object's keys, so that errors are deterministic.
func sortedRawKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
