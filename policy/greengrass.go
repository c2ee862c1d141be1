package policy

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// The Greengrass client device auth component's deviceGroups configuration
// (reference/greengrass-v2/client-device-auth-component.md), formatVersion
// 2021-03-05: definitions select devices by thing name and name a policy;
// policies are maps of named statements that allow operations on resources.

const deviceGroupsFormat = "2021-03-05"

// greengrassThingName is the only policy variable Greengrass accepts; any
// other makes the component refuse its configuration.
const greengrassThingName = "iot:Connection.Thing.ThingName"

// DeviceGroups is a compiled deviceGroups configuration.
type DeviceGroups struct {
	groups   []deviceGroup // sorted by name
	policies map[string]*Policy
}

type deviceGroup struct {
	name   string
	rule   *SelectionRule
	policy *Policy
}

// ParseDeviceGroups parses the deviceGroups configuration as JSON, either
// the deviceGroups object itself or a component configuration that holds it
// under "deviceGroups".
func ParseDeviceGroups(data []byte) (*DeviceGroups, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("deviceGroups: invalid JSON: %w", err)
	}
	return ParseDeviceGroupsValue(v)
}

// ParseDeviceGroupsValue is ParseDeviceGroups for the generic value a YAML
// or viper decoder yields (map[string]any or map[any]any, []any, strings).
// Field names are matched case-insensitively because viper lower-cases keys;
// group, policy and statement names are kept as given.
func ParseDeviceGroupsValue(v any) (*DeviceGroups, error) {
	top, ok := asMap(v)
	if !ok {
		return nil, fmt.Errorf("deviceGroups: want an object, got %T", v)
	}
	if inner, ok := field(top, "deviceGroups"); ok {
		if top, ok = asMap(inner); !ok {
			return nil, fmt.Errorf("deviceGroups: want an object, got %T", inner)
		}
	}
	for k := range top {
		switch strings.ToLower(k) {
		case "formatversion", "definitions", "policies":
		default:
			return nil, fmt.Errorf("deviceGroups: unknown field %q (want formatVersion, definitions, policies)", k)
		}
	}
	if fv, ok := field(top, "formatVersion"); ok {
		if s, _ := fv.(string); s != deviceGroupsFormat {
			return nil, fmt.Errorf("deviceGroups: formatVersion %v, want %q", fv, deviceGroupsFormat)
		}
	}
	g := &DeviceGroups{policies: map[string]*Policy{}}
	if pv, ok := field(top, "policies"); ok && pv != nil {
		pm, ok := asMap(pv)
		if !ok {
			return nil, fmt.Errorf("deviceGroups: policies: want an object, got %T", pv)
		}
		for _, name := range sortedKeys(pm) {
			p, err := parseGreengrassPolicy(name, pm[name])
			if err != nil {
				return nil, fmt.Errorf("deviceGroups: policies: %w", err)
			}
			g.policies[name] = p
		}
	}
	if dv, ok := field(top, "definitions"); ok && dv != nil {
		dm, ok := asMap(dv)
		if !ok {
			return nil, fmt.Errorf("deviceGroups: definitions: want an object, got %T", dv)
		}
		for _, name := range sortedKeys(dm) {
			gm, ok := asMap(dm[name])
			if !ok {
				return nil, fmt.Errorf("deviceGroups: definitions: %q: want an object, got %T", name, dm[name])
			}
			grp := deviceGroup{name: name}
			for k := range gm {
				switch strings.ToLower(k) {
				case "selectionrule", "policyname":
				default:
					return nil, fmt.Errorf("deviceGroups: definitions: %q: unknown field %q (want selectionRule, policyName)", name, k)
				}
			}
			rv, _ := field(gm, "selectionRule")
			rs, ok := rv.(string)
			if !ok {
				return nil, fmt.Errorf("deviceGroups: definitions: %q: selectionRule: want a string, got %T", name, rv)
			}
			rule, err := ParseSelectionRule(rs)
			if err != nil {
				return nil, fmt.Errorf("deviceGroups: definitions: %q: %w", name, err)
			}
			grp.rule = rule
			pv, _ := field(gm, "policyName")
			pn, ok := pv.(string)
			if !ok {
				return nil, fmt.Errorf("deviceGroups: definitions: %q: policyName: want a string, got %T", name, pv)
			}
			// Greengrass refuses a group whose policy does not exist.
			if grp.policy = g.policies[pn]; grp.policy == nil {
				return nil, fmt.Errorf("deviceGroups: definitions: %q: policyName %q is not in policies", name, pn)
			}
			g.groups = append(g.groups, grp)
		}
	}
	return g, nil
}

// PoliciesFor returns the policies of every group whose selection rule
// matches the thing name, each once: a device in several groups gets the
// union of their permissions. It is empty when no group matches, or when
// thingName is "" (a client that is not a thing is in no group).
func (g *DeviceGroups) PoliciesFor(thingName string) []*Policy {
	if g == nil || thingName == "" {
		return nil
	}
	var out []*Policy
	for _, grp := range g.groups {
		if !grp.rule.Match(thingName) {
			continue
		}
		dup := false
		for _, p := range out {
			if p == grp.policy {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, grp.policy)
		}
	}
	return out
}

// GroupsFor names the groups whose selection rule matches, for logs.
func (g *DeviceGroups) GroupsFor(thingName string) []string {
	if g == nil || thingName == "" {
		return nil
	}
	var out []string
	for _, grp := range g.groups {
		if grp.rule.Match(thingName) {
			out = append(out, grp.name)
		}
	}
	return out
}

// Policy returns the named policy, or nil.
func (g *DeviceGroups) Policy(name string) *Policy {
	if g == nil {
		return nil
	}
	return g.policies[name]
}

// greengrassOps maps Greengrass operations onto the IoT actions the broker
// asks about. Greengrass compares operations exactly (mqtt:publish, not
// mqtt:Publish); "mqtt:*" and "*" are every MQTT operation.
var greengrassOps = map[string][]string{
	"mqtt:connect":   {ActionConnect},
	"mqtt:publish":   {ActionPublish},
	"mqtt:subscribe": {ActionSubscribe},
	"mqtt:*":         {ActionConnect, ActionPublish, ActionSubscribe},
	"*":              {ActionConnect, ActionPublish, ActionSubscribe},
}

func parseGreengrassPolicy(name string, v any) (*Policy, error) {
	p := &Policy{name: name, greengrass: true}
	fail := func(i int, sid, format string, args ...any) (*Policy, error) {
		return nil, &ParseError{Policy: name, Statement: i, Sid: sid, Reason: fmt.Sprintf(format, args...)}
	}
	sm, ok := asMap(v)
	if !ok {
		return fail(-1, "", "want an object of statements, got %T", v)
	}
	for i, sid := range sortedKeys(sm) {
		m, ok := asMap(sm[sid])
		if !ok {
			return fail(i, sid, "want an object, got %T", sm[sid])
		}
		st := &statement{policy: p, index: i, sid: sid, greengrass: true}
		for k, fv := range m {
			switch strings.ToLower(k) {
			case "statementdescription", "operations", "resources":
			case "effect":
				// Greengrass only grants: its configuration keeps only ALLOW
				// statements, so a DENY would silently not deny. Refuse it.
				if s, _ := fv.(string); !strings.EqualFold(s, "allow") {
					return fail(i, sid, "effect %v: Greengrass client device auth statements can only allow", fv)
				}
			default:
				return fail(i, sid, "unknown field %q (want statementDescription, operations, resources)", k)
			}
		}
		opsV, _ := field(m, "operations")
		ops, err := anyStrings(opsV)
		if err != nil {
			return fail(i, sid, "operations: %v", err)
		}
		var actions []string
		for _, op := range ops {
			acts, ok := greengrassOps[op]
			if !ok {
				return fail(i, sid, "operations: unknown operation %q (want mqtt:connect, mqtt:publish, mqtt:subscribe, mqtt:* or *)", op)
			}
			actions = append(actions, acts...)
		}
		if err := st.setActions(actions, false); err != nil {
			return fail(i, sid, "operations: %v", err)
		}
		resV, _ := field(m, "resources")
		res, err := anyStrings(resV)
		if err != nil {
			return fail(i, sid, "resources: %v", err)
		}
		for _, r := range res {
			if r != "*" && !strings.HasPrefix(r, "mqtt:") {
				return fail(i, sid, "resources: %q is not mqtt:clientId:ID, mqtt:topic:TOPIC, mqtt:topicfilter:FILTER or *", r)
			}
			pat, err := compilePattern(r, patternOpts{wildcards: true, variables: true, checkVar: checkGreengrassVar})
			if err != nil {
				return fail(i, sid, "resources: %q: %v", r, err)
			}
			// Greengrass has only '*' as a wildcard: '?' is literal.
			for j := range pat.toks {
				if pat.toks[j].kind == tokOne {
					pat.toks[j] = token{kind: tokLiteral, lit: "?"}
				}
			}
			st.resources = append(st.resources, pat)
			if pat.any {
				st.anyResource = true
			}
		}
		st.finish()
		p.statements = append(p.statements, st)
	}
	// Greengrass does not check receive (and has no retain-publish
	// operation), so a device with a policy may receive on, and retain on,
	// whatever it can subscribe or publish to.
	implicit := &statement{policy: p, index: -1, greengrass: true, anyResource: true}
	_ = implicit.setActions([]string{ActionReceive, ActionRetainPublish}, false)
	implicit.finish()
	implicit.allow.Reason = fmt.Sprintf("Greengrass policy %q: client device auth does not check iot:Receive or iot:RetainPublish", name)
	p.statements = append(p.statements, implicit)
	return p, nil
}

func checkGreengrassVar(name string) error {
	if name != greengrassThingName {
		return fmt.Errorf("unsupported policy variable ${%s} (Greengrass supports only ${%s})", name, greengrassThingName)
	}
	return nil
}

// asMap accepts the map types JSON and YAML decoders produce.
func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, val := range m {
			out[fmt.Sprint(k)] = val
		}
		return out, true
	}
	return nil, false
}

// field finds a field by name, case-insensitively.
func field(m map[string]any, name string) (any, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// anyStrings reads a string or a non-empty list of strings.
func anyStrings(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []string:
		if len(x) == 0 {
			return nil, fmt.Errorf("empty list")
		}
		return x, nil
	case []any:
		if len(x) == 0 {
			return nil, fmt.Errorf("empty list")
		}
		out := make([]string, 0, len(x))
		for i, it := range x {
			s, ok := it.(string)
			if !ok {
				return nil, fmt.Errorf("item %d: want a string, got %T", i, it)
			}
			out = append(out, s)
		}
		return out, nil
	case nil:
		return nil, fmt.Errorf("missing")
	}
	return nil, fmt.Errorf("want a string or a list of strings, got %T", v)
}

// SelectionRule is a compiled Greengrass selection rule: thingName clauses
// joined by AND and OR (AND binds tighter), in the AWS IoT fleet indexing
// query syntax the component uses.
type SelectionRule struct {
	text string
	or   [][]nameMatcher // OR of ANDs
}

// nameMatcher is one thingName clause: exact, prefix (trailing *), suffix
// (leading *), substring (both) or any (bare *).
type nameMatcher struct {
	value          string
	prefix, suffix bool // '*' at the start / at the end
}

func (n nameMatcher) match(s string) bool {
	switch {
	case n.prefix && n.suffix:
		return strings.Contains(s, n.value)
	case n.suffix:
		return strings.HasPrefix(s, n.value)
	case n.prefix:
		return strings.HasSuffix(s, n.value)
	}
	return s == n.value
}

// String is the rule as written.
func (r *SelectionRule) String() string { return r.text }

// Match reports whether a thing name is selected.
func (r *SelectionRule) Match(thingName string) bool {
	if r == nil {
		return false
	}
	for _, and := range r.or {
		ok := true
		for _, m := range and {
			if !m.match(thingName) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// ParseSelectionRule compiles a selection rule such as
// "thingName: MyClientDevice1 OR thingName: MyClientDevice2". Thing names
// are letters, digits, '-', '_' and escaped colons (`\:`, entered as `\\:`
// in JSON), with an optional '*' at either end, or '*' alone; OR and AND
// are upper case, as in the component's grammar.
func ParseSelectionRule(s string) (*SelectionRule, error) {
	r := &SelectionRule{text: s}
	toks := strings.Fields(s)
	if len(toks) == 0 {
		return nil, fmt.Errorf("selectionRule %q: empty", s)
	}
	var and []nameMatcher
	expectClause := true
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if !expectClause {
			switch t {
			case "OR":
				r.or = append(r.or, and)
				and = nil
			case "AND":
			default:
				return nil, fmt.Errorf("selectionRule %q: want OR or AND before %q", s, t)
			}
			expectClause = true
			continue
		}
		const sel = "thingName:"
		if !strings.HasPrefix(t, sel) {
			return nil, fmt.Errorf("selectionRule %q: want thingName: <name>, got %q", s, t)
		}
		value := t[len(sel):]
		if value == "" { // "thingName: X"
			if i+1 >= len(toks) {
				return nil, fmt.Errorf("selectionRule %q: thingName: without a name", s)
			}
			i++
			value = toks[i]
		}
		m, err := parseThingNamePattern(value)
		if err != nil {
			return nil, fmt.Errorf("selectionRule %q: %w", s, err)
		}
		and = append(and, m)
		expectClause = false
	}
	if expectClause {
		return nil, fmt.Errorf("selectionRule %q: ends with an operator", s)
	}
	r.or = append(r.or, and)
	return r, nil
}

func parseThingNamePattern(v string) (nameMatcher, error) {
	if v == "*" {
		return nameMatcher{prefix: true, suffix: true}, nil
	}
	var m nameMatcher
	if strings.HasPrefix(v, "*") {
		m.prefix, v = true, v[1:]
	}
	if strings.HasSuffix(v, "*") {
		m.suffix, v = true, v[:len(v)-1]
	}
	if v == "" {
		return m, fmt.Errorf("thing name pattern is empty")
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && i+1 < len(v) && v[i+1] == ':':
			b.WriteByte(':')
			i++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		case c == ':':
			return m, fmt.Errorf("thing name %q: escape ':' as '\\:'", v)
		case c == '*':
			return m, fmt.Errorf("thing name %q: '*' only at the start or the end", v)
		default:
			return m, fmt.Errorf("thing name %q: character %q is not allowed (letters, digits, '-', '_', '\\:')", v, c)
		}
	}
	m.value = b.String()
	return m, nil
}
