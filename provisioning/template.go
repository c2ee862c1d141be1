package provisioning

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Resource types a template may declare (aws-iot-core/provision-template.md).
const (
	resThing       = "AWS::IoT::Thing"
	resCertificate = "AWS::IoT::Certificate"
	resPolicy      = "AWS::IoT::Policy"
)

// MaxTemplateBody is botocore's TemplateBody limit.
const MaxTemplateBody = 10240

// JITPParameters are the only parameters a JITP template may use: the device certificate's subject
// fields and its ID (aws-iot-core/jit-provisioning.md).
var JITPParameters = []string{
	"AWS::IoT::Certificate::Country", "AWS::IoT::Certificate::Organization", "AWS::IoT::Certificate::OrganizationalUnit",
	"AWS::IoT::Certificate::DistinguishedNameQualifier", "AWS::IoT::Certificate::StateName", "AWS::IoT::Certificate::CommonName",
	"AWS::IoT::Certificate::SerialNumber", "AWS::IoT::Certificate::Id",
}

type paramDef struct {
	Type    string  `json:"Type"`
	Default *string `json:"Default"`
}

type resource struct {
	name     string
	typ      string
	props    map[string]any
	override map[string]string // normalised key (ATTRIBUTEPAYLOAD, THINGTYPENAME, THINGGROUPS, STATUS) -> action
}

// ParsedTemplate is a checked provisioning template, ready to resolve with parameters.
type ParsedTemplate struct {
	typ          string
	params       map[string]paramDef
	mappings     map[string]map[string]map[string]any
	resources    []resource
	deviceConfig map[string]any
}

// Override actions (OverrideSettings).
const (
	overrideDoNothing = "DO_NOTHING"
	overrideReplace   = "REPLACE"
	overrideFail      = "FAIL"
	overrideMerge     = "MERGE"
)

func normKey(k string) string { return strings.ToUpper(strings.ReplaceAll(k, "_", "")) }

// ParseTemplate checks a template body for its type (TypeFleet or TypeJITP), so that a template that
// cannot run is refused when it is stored, not when a device needs it.
func ParseTemplate(body, typ string) (*ParsedTemplate, error) {
	if len(body) > MaxTemplateBody {
		return nil, fmt.Errorf("the template body is %d characters; the limit is %d", len(body), MaxTemplateBody)
	}
	var raw struct {
		Parameters          map[string]paramDef                  `json:"Parameters"`
		Mappings            map[string]map[string]map[string]any `json:"Mappings"`
		Resources           map[string]json.RawMessage           `json:"Resources"`
		DeviceConfiguration map[string]any                       `json:"DeviceConfiguration"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("the template body is not a JSON template: %v", err)
	}
	t := &ParsedTemplate{typ: typ, params: raw.Parameters, mappings: raw.Mappings, deviceConfig: raw.DeviceConfiguration}
	if len(raw.Resources) == 0 {
		return nil, fmt.Errorf("the template has no Resources")
	}
	for name, p := range t.params {
		if p.Type != "" && p.Type != "String" {
			return nil, fmt.Errorf("parameter %s: Type %q is not String", name, p.Type)
		}
		if typ == TypeJITP && !slices.Contains(JITPParameters, name) {
			return nil, fmt.Errorf("parameter %s: a JITP template takes only the certificate's fields (%s)", name, strings.Join(JITPParameters, ", "))
		}
	}
	if typ == TypeJITP && (len(t.mappings) > 0 || len(t.deviceConfig) > 0) {
		return nil, fmt.Errorf("Mappings and DeviceConfiguration are for fleet provisioning templates only")
	}
	for m, keys := range t.mappings {
		for k, vals := range keys {
			for n, v := range vals {
				if _, isStr := v.(string); !isStr {
					return nil, fmt.Errorf("Mappings.%s.%s.%s: values are strings (no Ref or functions in Mappings)", m, k, n)
				}
			}
		}
	}
	for k, v := range t.deviceConfig {
		if m, isMap := v.(map[string]any); isMap && !isFunction(m) {
			return nil, fmt.Errorf("DeviceConfiguration.%s: nested objects are not allowed", k)
		}
	}
	names := make([]string, 0, len(raw.Resources))
	for n := range raw.Resources {
		names = append(names, n)
	}
	sort.Strings(names)
	counts := map[string]int{}
	for _, n := range names {
		var r struct {
			Type             string            `json:"Type"`
			Properties       map[string]any    `json:"Properties"`
			OverrideSettings map[string]string `json:"OverrideSettings"`
		}
		if err := json.Unmarshal(raw.Resources[n], &r); err != nil {
			return nil, fmt.Errorf("resource %s: %v", n, err)
		}
		res := resource{name: n, typ: r.Type, props: r.Properties, override: map[string]string{}}
		for k, v := range r.OverrideSettings {
			switch strings.ToUpper(v) {
			case overrideDoNothing, overrideReplace, overrideFail, overrideMerge:
			default:
				return nil, fmt.Errorf("resource %s: OverrideSettings.%s %q is not DO_NOTHING, REPLACE, FAIL or MERGE", n, k, v)
			}
			res.override[normKey(k)] = strings.ToUpper(v)
		}
		if res.props == nil {
			res.props = map[string]any{}
		}
		switch r.Type {
		case resThing:
			if _, ok := res.props["ThingName"]; !ok {
				return nil, fmt.Errorf("resource %s: a thing needs ThingName", n)
			}
		case resCertificate:
			ways := 0
			for _, k := range []string{"CertificateSigningRequest", "CertificateId", "CertificatePem"} {
				if _, ok := res.props[k]; ok {
					ways++
				}
			}
			if ways != 1 {
				return nil, fmt.Errorf("resource %s: a certificate needs exactly one of CertificateSigningRequest, CertificateId and CertificatePem", n)
			}
			if _, ok := res.props["CertificateId"]; !ok {
				// JITP and fleet templates provision a certificate that exists already (TPL "Important").
				return nil, fmt.Errorf("resource %s: a %s template must use CertificateId (a CSR or PEM is for bulk registration)", n, typ)
			}
		case resPolicy:
			_, byName := res.props["PolicyName"]
			_, byDoc := res.props["PolicyDocument"]
			if !byName && !byDoc {
				return nil, fmt.Errorf("resource %s: a policy needs PolicyName or PolicyDocument", n)
			}
		default:
			return nil, fmt.Errorf("resource %s: Type %q is not AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy", n, r.Type)
		}
		counts[r.Type]++
		t.resources = append(t.resources, res)
	}
	if counts[resThing] > 1 || counts[resCertificate] > 1 {
		return nil, fmt.Errorf("a template declares at most one thing and one certificate")
	}
	return t, nil
}

// Parameters are the declared parameter names, sorted.
func (t *ParsedTemplate) Parameters() []string {
	out := make([]string, 0, len(t.params))
	for n := range t.params {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ThingPlan is the thing a template provisions.
type ThingPlan struct {
	Name       string
	TypeName   string
	Attributes map[string]string
	// Groups are the thing groups the thing is put in (static groups that must exist); BillingGroup is
	// resolved but not kept: ggbroker has no billing groups.
	Groups       []string
	BillingGroup string
	override     map[string]string
}

// PolicyPlan is one policy a template attaches: an existing one (Document empty) or a new document.
type PolicyPlan struct {
	Name     string
	Document string
	named    bool
}

// Plan is a template resolved with its parameters: what Apply makes.
type Plan struct {
	Thing               *ThingPlan
	CertificateID       string
	CertificateStatus   string
	certOverride        string
	Policies            []PolicyPlan
	DeviceConfiguration map[string]string
}

// MissingParameterError names the parameter a template needed and did not get.
type MissingParameterError struct{ Name string }

func (e *MissingParameterError) Error() string {
	return fmt.Sprintf("parameter %s has no value and no default", e.Name)
}

// Resolve evaluates the template with parameter values: Ref, Fn::Join, Fn::Select, Fn::FindInMap,
// Fn::Split and Fn::Sub. A parameter without a value or default fails, naming it.
func (t *ParsedTemplate) Resolve(params map[string]string) (*Plan, error) {
	ev := &evaluator{t: t, params: params}
	p := &Plan{}
	for _, r := range t.resources {
		switch r.typ {
		case resThing:
			th := &ThingPlan{override: r.override}
			var err error
			if th.Name, err = ev.str(r.props["ThingName"], r.name+".ThingName"); err != nil {
				return nil, err
			}
			if v, ok := r.props["ThingTypeName"]; ok {
				if th.TypeName, err = ev.str(v, r.name+".ThingTypeName"); err != nil {
					return nil, err
				}
			}
			if v, ok := r.props["AttributePayload"]; ok {
				m, isMap := v.(map[string]any)
				if !isMap {
					return nil, fmt.Errorf("%s.AttributePayload must be an object", r.name)
				}
				th.Attributes = map[string]string{}
				for k, av := range m {
					if th.Attributes[k], err = ev.str(av, r.name+".AttributePayload."+k); err != nil {
						return nil, err
					}
				}
			}
			if v, ok := r.props["ThingGroups"]; ok {
				list, err := ev.eval(v)
				if err != nil {
					return nil, err
				}
				items, _ := list.([]any)
				for i, g := range items {
					s, err := ev.str(g, fmt.Sprintf("%s.ThingGroups[%d]", r.name, i))
					if err != nil {
						return nil, err
					}
					th.Groups = append(th.Groups, s)
				}
			}
			if v, ok := r.props["BillingGroup"]; ok {
				if th.BillingGroup, err = ev.str(v, r.name+".BillingGroup"); err != nil {
					return nil, err
				}
			}
			p.Thing = th
		case resCertificate:
			var err error
			if p.CertificateID, err = ev.str(r.props["CertificateId"], r.name+".CertificateId"); err != nil {
				return nil, err
			}
			p.CertificateStatus = "ACTIVE"
			if v, ok := r.props["Status"]; ok {
				s, err := ev.str(v, r.name+".Status")
				if err != nil {
					return nil, err
				}
				// The fleet example writes "Active": accepted in any case.
				switch p.CertificateStatus = strings.ToUpper(s); p.CertificateStatus {
				case "ACTIVE", "INACTIVE":
				default:
					return nil, fmt.Errorf("%s.Status %q is not ACTIVE or INACTIVE", r.name, s)
				}
			}
			p.certOverride = r.override["STATUS"]
		case resPolicy:
			pp := PolicyPlan{}
			var err error
			if v, ok := r.props["PolicyName"]; ok {
				if pp.Name, err = ev.str(v, r.name+".PolicyName"); err != nil {
					return nil, err
				}
				pp.named = true
			}
			if v, ok := r.props["PolicyDocument"]; ok {
				switch doc := v.(type) {
				case string:
					pp.Document = doc
				case map[string]any:
					// The fleet example gives the document as an object; the others as a string.
					resolved, err := ev.eval(doc)
					if err != nil {
						return nil, err
					}
					raw, _ := json.Marshal(resolved)
					pp.Document = string(raw)
				default:
					return nil, fmt.Errorf("%s.PolicyDocument must be a JSON document (a string or an object)", r.name)
				}
			}
			p.Policies = append(p.Policies, pp)
		}
	}
	if len(t.deviceConfig) > 0 {
		p.DeviceConfiguration = map[string]string{}
		for k, v := range t.deviceConfig {
			s, err := ev.str(v, "DeviceConfiguration."+k)
			if err != nil {
				return nil, err
			}
			p.DeviceConfiguration[k] = s
		}
	}
	return p, nil
}

// evaluator resolves values and intrinsic functions.
type evaluator struct {
	t      *ParsedTemplate
	params map[string]string
}

var functionNames = []string{"Ref", "Fn::Join", "Fn::Select", "Fn::FindInMap", "Fn::Split", "Fn::Sub"}

func isFunction(m map[string]any) bool {
	if len(m) != 1 {
		return false
	}
	for k := range m {
		return slices.Contains(functionNames, k)
	}
	return false
}

func (e *evaluator) ref(name string) (string, error) {
	if v, ok := e.params[name]; ok {
		return v, nil
	}
	if d, declared := e.t.params[name]; declared && d.Default != nil {
		return *d.Default, nil
	}
	return "", &MissingParameterError{Name: name}
}

func (e *evaluator) str(v any, where string) (string, error) {
	r, err := e.eval(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	switch x := r.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", fmt.Errorf("%s: want a string, got %T", where, r)
}

func (e *evaluator) eval(v any) (any, error) {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			r, err := e.eval(item)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	case map[string]any:
		if !isFunction(x) {
			out := make(map[string]any, len(x))
			for k, item := range x {
				r, err := e.eval(item)
				if err != nil {
					return nil, err
				}
				out[k] = r
			}
			return out, nil
		}
		for fn, arg := range x {
			return e.call(fn, arg)
		}
	}
	return v, nil
}

func (e *evaluator) args(fn string, arg any, n int) ([]any, error) {
	list, ok := arg.([]any)
	if !ok || len(list) != n {
		return nil, fmt.Errorf("%s takes a list of %d arguments", fn, n)
	}
	return list, nil
}

func (e *evaluator) call(fn string, arg any) (any, error) {
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Ref takes a parameter name")
		}
		return e.ref(name)
	case "Fn::Join":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		sep, err := e.str(a[0], fn)
		if err != nil {
			return nil, err
		}
		list, err := e.eval(a[1])
		if err != nil {
			return nil, err
		}
		items, ok := list.([]any)
		if !ok {
			return nil, fmt.Errorf("Fn::Join: the second argument must be a list")
		}
		parts := make([]string, len(items))
		for i, it := range items {
			if parts[i], err = e.str(it, fn); err != nil {
				return nil, err
			}
		}
		return strings.Join(parts, sep), nil
	case "Fn::Select":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		idxS, err := e.str(a[0], fn)
		if err != nil {
			return nil, err
		}
		idx, err := strconv.Atoi(idxS)
		if err != nil {
			return nil, fmt.Errorf("Fn::Select: index %q is not a number", idxS)
		}
		list, err := e.eval(a[1])
		if err != nil {
			return nil, err
		}
		items, _ := list.([]any)
		// AWS checks neither bounds nor nulls: both fail the provisioning.
		if idx < 0 || idx >= len(items) || items[idx] == nil {
			return nil, fmt.Errorf("Fn::Select: index %d is out of bounds of a list of %d (or selects null)", idx, len(items))
		}
		return items[idx], nil
	case "Fn::FindInMap":
		a, err := e.args(fn, arg, 3)
		if err != nil {
			return nil, err
		}
		var keys [3]string
		for i := range a {
			if keys[i], err = e.str(a[i], fn); err != nil {
				return nil, err
			}
		}
		v, ok := e.t.mappings[keys[0]][keys[1]][keys[2]]
		if !ok {
			return nil, fmt.Errorf("Fn::FindInMap: no Mappings.%s.%s.%s", keys[0], keys[1], keys[2])
		}
		return v, nil
	case "Fn::Split":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		sep, err := e.str(a[0], fn)
		if err != nil {
			return nil, err
		}
		s, err := e.str(a[1], fn)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(s, sep) {
			out = append(out, p)
		}
		return out, nil
	case "Fn::Sub":
		text, vars := "", map[string]any{}
		switch x := arg.(type) {
		case string:
			text = x
		case []any:
			if len(x) != 2 {
				return nil, fmt.Errorf("Fn::Sub takes a string, or a string and a map of variables")
			}
			text, _ = x[0].(string)
			vars, _ = x[1].(map[string]any)
		default:
			return nil, fmt.Errorf("Fn::Sub takes a string, or a string and a map of variables")
		}
		var subErr error
		out := subPattern.ReplaceAllStringFunc(text, func(m string) string {
			name := m[2 : len(m)-1]
			if v, ok := vars[name]; ok {
				s, err := e.str(v, "Fn::Sub ${"+name+"}")
				if err != nil && subErr == nil {
					subErr = err
				}
				return s
			}
			s, err := e.ref(name)
			if err != nil && subErr == nil {
				subErr = err
			}
			return s
		})
		return out, subErr
	}
	return nil, fmt.Errorf("unknown function %s", fn)
}

var subPattern = regexp.MustCompile(`\$\{[^}]+\}`)
