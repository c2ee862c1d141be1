package iotapi

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// AWS IoT's rules for policies (botocore's iot model: PolicyName, PolicyDocument).
var policyNamePattern = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)

const maxPolicyDocument = 404600

func (s *Service) policyName(r *http.Request) (string, error) {
	name := r.PathValue("policyName")
	if !policyNamePattern.MatchString(name) {
		return "", invalid("policy name %q must be 1 to 128 characters of a-z, A-Z, 0-9 and _+=,.@-", name)
	}
	return name, nil
}

// policyFile reads a stored policy document; a missing one is ResourceNotFoundException.
func (s *Service) policyFile(name string) ([]byte, os.FileInfo, error) {
	path := state.PolicyPath(s.state.PolicyDir, name)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fail(errResourceNotFound, "Policy not found: %s", name)
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	return raw, fi, nil
}

func (s *Service) createPolicy(w http.ResponseWriter, r *http.Request) error {
	name, err := s.policyName(r)
	if err != nil {
		return err
	}
	var in struct {
		PolicyDocument string `json:"policyDocument"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.PolicyDocument == "" || len(in.PolicyDocument) > maxPolicyDocument {
		return invalid("policyDocument must be 1 to %d characters", maxPolicyDocument)
	}
	// The engine that decides every MQTT action parses it, so what is accepted here is what applies.
	if _, err := policy.ParseDocument(name, []byte(in.PolicyDocument)); err != nil {
		return fail(errMalformedPolicy, "Policy document is malformed: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := state.PolicyPath(s.state.PolicyDir, name)
	if _, err := os.Stat(path); err == nil {
		return &apiError{typ: errResourceAlreadyExists, msg: "Policy cannot be created - name already exists (name=" + name + ")",
			fields: map[string]any{"resourceId": name, "resourceArn": s.arn("policy", name)}}
	}
	if err := os.MkdirAll(s.state.PolicyDir, 0o700); err != nil {
		return err
	}
	if err := certs.WriteFileAtomic(path, []byte(in.PolicyDocument), 0o644); err != nil {
		return err
	}
	return ok(w, map[string]any{"policyName": name, "policyArn": s.arn("policy", name), "policyDocument": in.PolicyDocument, "policyVersionId": "1"})
}

func docGeneration(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

func (s *Service) getPolicy(w http.ResponseWriter, r *http.Request) error {
	name, err := s.policyName(r)
	if err != nil {
		return err
	}
	raw, fi, err := s.policyFile(name)
	if err != nil {
		return err
	}
	// The file has no creation time of its own: both dates are its modification time.
	return ok(w, map[string]any{"policyName": name, "policyArn": s.arn("policy", name), "policyDocument": string(raw),
		"defaultVersionId": "1", "creationDate": epoch(fi.ModTime()), "lastModifiedDate": epoch(fi.ModTime()),
		"generationId": docGeneration(raw)})
}

// policyNames lists the policy files by name (without parsing them: one broken hand edit must not
// hide the others).
func (s *Service) policyNames() ([]string, error) {
	entries, err := os.ReadDir(s.state.PolicyDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		n, isPolicy := strings.CutSuffix(e.Name(), ".json")
		if !e.IsDir() && isPolicy && !strings.HasPrefix(n, ".") && policyNamePattern.MatchString(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

func (s *Service) policyList(names []string) []map[string]string {
	out := make([]map[string]string, 0, len(names))
	for _, n := range names {
		out = append(out, map[string]string{"policyName": n, "policyArn": s.arn("policy", n)})
	}
	return out
}

func (s *Service) listPolicies(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryBool(r, "isAscendingOrder"); err != nil {
		return err
	}
	names, err := s.policyNames()
	if err != nil {
		return err
	}
	p, err := paginate(r, len(names), "marker", "pageSize", 25, 250)
	if err != nil {
		return err
	}
	out := map[string]any{"policies": s.policyList(names[p.start:p.end])}
	if p.next != "" {
		out["nextMarker"] = p.next
	}
	return ok(w, out)
}

// attachedTo lists the certificates a policy is attached to.
func (s *Service) attachedTo(name string) ([]*auth.Certificate, error) {
	all, err := s.state.Registry.Certificates()
	return withPolicy(all, err, func(c *auth.Certificate) []string { return c.Policies }, name)
}

// withPolicy keeps the targets (certificates, thing groups) of all that have the policy name
// attached; err is the error of reading all, handed on.
func withPolicy[T any](all []T, err error, policiesOf func(T) []string, name string) ([]T, error) {
	if err != nil {
		return nil, err
	}
	var out []T
	for _, t := range all {
		if slices.Contains(policiesOf(t), name) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (s *Service) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	name, err := s.policyName(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.policyFile(name); err != nil {
		return err
	}
	attached, err := s.attachedTo(name)
	if err != nil {
		return err
	}
	groups, err := s.groupsWithPolicy(name)
	if err != nil {
		return err
	}
	if len(attached) > 0 || len(groups) > 0 {
		return fail(errDeleteConflict, "The policy cannot be deleted as the policy is attached to one or more principals (name=%s)", name)
	}
	if err := os.Remove(state.PolicyPath(s.state.PolicyDir, name)); err != nil {
		return err
	}
	return ok(w, nil)
}

// groupsWithPolicy lists the thing groups a policy is attached to.
func (s *Service) groupsWithPolicy(name string) ([]*auth.ThingGroup, error) {
	all, err := s.state.Registry.ThingGroups()
	return withPolicy(all, err, func(g *auth.ThingGroup) []string { return g.Policies }, name)
}

// policyTarget is what an AttachPolicy/DetachPolicy/ListAttachedPolicies target names: a certificate,
// or a thing group (arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME). Exactly one is set.
type policyTarget struct {
	cert  *auth.Certificate
	group *auth.ThingGroup
}

func (t policyTarget) policies() []string {
	if t.group != nil {
		return t.group.Policies
	}
	return t.cert.Policies
}

func (s *Service) policyTarget(t string) (policyTarget, error) {
	if _, name, isGroup := strings.Cut(t, ":thinggroup/"); isGroup && strings.HasPrefix(t, "arn:") {
		g, err := s.thingGroup(name)
		if err != nil {
			return policyTarget{}, err
		}
		return policyTarget{group: g}, nil
	}
	rec, err := s.target(t)
	return policyTarget{cert: rec}, err
}

// target is the certificate a target names (TestAuthorization's principal, or a policy target that is
// not a thing group). Cognito identities, AWS' other targets, have no offline meaning.
func (s *Service) target(t string) (*auth.Certificate, error) {
	if t == "" {
		return nil, invalid("target is required")
	}
	if strings.HasPrefix(t, "arn:") && !strings.Contains(t, ":cert/") {
		return nil, invalid("target %q: only certificate ARNs (arn:aws:iot:REGION:ACCOUNT:cert/ID) and thing group ARNs (...:thinggroup/NAME) are supported here", t)
	}
	id, err := certIDFromARN(t)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.state.Registry.Certificate(id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fail(errResourceNotFound, "The certificate %s does not exist", id)
	}
	return rec, nil
}

func (s *Service) setPolicy(w http.ResponseWriter, r *http.Request, attach bool) error {
	name, err := s.policyName(r)
	if err != nil {
		return err
	}
	var in struct {
		Target string `json:"target"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	t, err := s.policyTarget(in.Target)
	if err != nil {
		return err
	}
	if attach {
		if _, _, err := s.policyFile(name); err != nil {
			return err
		}
	}
	if t.group != nil {
		err = s.state.Registry.SetGroupPolicy(t.group.Name, name, attach)
	} else {
		err = s.state.Registry.SetCertificatePolicy(t.cert.ID, name, attach)
	}
	if err != nil {
		return err
	}
	return ok(w, nil)
}

func (s *Service) attachPolicy(w http.ResponseWriter, r *http.Request) error {
	return s.setPolicy(w, r, true)
}

func (s *Service) detachPolicy(w http.ResponseWriter, r *http.Request) error {
	return s.setPolicy(w, r, false)
}

func (s *Service) listAttachedPolicies(w http.ResponseWriter, r *http.Request) error {
	t, err := s.policyTarget(r.PathValue("target"))
	if err != nil {
		return err
	}
	names := slices.Sorted(slices.Values(t.policies()))
	p, err := paginate(r, len(names), "marker", "pageSize", 25, 250)
	if err != nil {
		return err
	}
	out := map[string]any{"policies": s.policyList(names[p.start:p.end])}
	if p.next != "" {
		out["nextMarker"] = p.next
	}
	return ok(w, out)
}

func (s *Service) listTargetsForPolicy(w http.ResponseWriter, r *http.Request) error {
	name, err := s.policyName(r)
	if err != nil {
		return err
	}
	if _, _, err := s.policyFile(name); err != nil {
		return err
	}
	certs, err := s.attachedTo(name)
	if err != nil {
		return err
	}
	groups, err := s.groupsWithPolicy(name)
	if err != nil {
		return err
	}
	arns := make([]string, 0, len(certs)+len(groups))
	for _, c := range certs {
		arns = append(arns, s.certArn(c.ID))
	}
	for _, g := range groups {
		arns = append(arns, s.arn("thinggroup", g.Name))
	}
	return writeArnPage(w, r, arns, "marker", "pageSize", "targets", "nextMarker")
}

// mergePolicyNames appends the names of b that a lacks.
func mergePolicyNames(a, b []string) []string {
	for _, n := range b {
		if !slices.Contains(a, n) {
			a = append(a, n)
		}
	}
	return a
}

// actionTypes maps TestAuthorization's actionType to the IoT action it tests.
var actionTypes = map[string]string{
	"PUBLISH": policy.ActionPublish, "SUBSCRIBE": policy.ActionSubscribe,
	"RECEIVE": policy.ActionReceive, "CONNECT": policy.ActionConnect,
}

type authInfo struct {
	ActionType string   `json:"actionType"`
	Resources  []string `json:"resources"`
}

// testAuthorization evaluates with the engine that decides the broker's MQTT actions (and `ggbroker
// policy check`): the certificate's attached policies, plus policyNamesToAdd, minus
// policyNamesToSkip. Each policy is also evaluated alone, to list which allowed and which denied.
func (s *Service) testAuthorization(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Principal         string     `json:"principal"`
		CognitoPool       string     `json:"cognitoIdentityPoolId"`
		AuthInfos         []authInfo `json:"authInfos"`
		PolicyNamesToAdd  []string   `json:"policyNamesToAdd"`
		PolicyNamesToSkip []string   `json:"policyNamesToSkip"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if len(in.AuthInfos) < 1 || len(in.AuthInfos) > 10 {
		return invalid("authInfos must hold 1 to 10 entries, got %d", len(in.AuthInfos))
	}
	if in.CognitoPool != "" {
		return invalid("Cognito identities are not supported here: give a certificate principal")
	}
	ctx := &policy.Context{ClientID: r.URL.Query().Get("clientId")}
	var names []string
	if in.Principal != "" {
		rec, err := s.target(in.Principal)
		if err != nil {
			return err
		}
		_, parsed, err := s.state.Registry.Certificate(rec.ID)
		if err != nil {
			return err
		}
		ctx.Certificate, ctx.CertificateID = parsed, rec.ID
		names = slices.Clone(rec.Policies)
		// Thing variables resolve only when the client ID is a thing the certificate is attached to
		// (aws-iot-core/thing-policy-variables.md).
		// The policies of the thing's groups apply under the same condition (auth.ThingGroup).
		if ctx.ClientID != "" && rec.AttachedTo(ctx.ClientID) {
			if t, found, _ := s.state.Registry.Thing(ctx.ClientID); found {
				ctx.Thing = &policy.Thing{Name: t.Name, TypeName: t.TypeName, Attributes: t.Attributes}
				d, err := s.state.Registry.Snapshot()
				if err != nil {
					return err
				}
				for _, g := range d.GroupsOf(t.Name) {
					names = mergePolicyNames(names, d.ThingGroups[g].Policies)
				}
			}
		}
	}
	for _, n := range in.PolicyNamesToAdd {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(in.PolicyNamesToSkip, n) })
	var ps []*policy.Policy
	for _, n := range names {
		if _, _, err := s.policyFile(n); err != nil {
			return err
		}
		p, err := state.ParsePolicyFile(state.PolicyPath(s.state.PolicyDir, n), n)
		if err != nil {
			return fail(errMalformedPolicy, "%v", err)
		}
		ps = append(ps, p)
	}
	env := policy.Env{Region: s.core.Core.Region, AccountID: s.core.Core.AccountID}
	results := make([]map[string]any, 0, len(in.AuthInfos))
	for _, ai := range in.AuthInfos {
		action, known := actionTypes[ai.ActionType]
		if !known {
			return invalid("actionType %q is not PUBLISH, SUBSCRIBE, RECEIVE or CONNECT", ai.ActionType)
		}
		if len(ai.Resources) == 0 {
			return invalid("authInfos: resources must not be empty")
		}
		results = append(results, s.authResult(env, ps, action, ai, ctx))
	}
	return ok(w, map[string]any{"authResults": results})
}

func (s *Service) authResult(env policy.Env, ps []*policy.Policy, action string, ai authInfo, ctx *policy.Context) map[string]any {
	decision := policy.Allowed
	var missing []string
	for _, res := range ai.Resources {
		d, diag := policy.NewSet(env, ps...).Evaluate(policy.Request{Action: action, ARN: res, Context: ctx})
		switch {
		case d == policy.ExplicitDeny:
			decision = policy.ExplicitDeny
		case d == policy.ImplicitDeny && decision == policy.Allowed:
			decision = policy.ImplicitDeny
		}
		missing = append(missing, diag.Unresolved...)
	}
	var allowed, explicit []string
	for _, p := range ps {
		alone := policy.Allowed
		for _, res := range ai.Resources {
			d, _ := policy.NewSet(env, p).Evaluate(policy.Request{Action: action, ARN: res, Context: ctx})
			if d == policy.ExplicitDeny {
				alone = policy.ExplicitDeny
				break
			}
			if d == policy.ImplicitDeny {
				alone = policy.ImplicitDeny
			}
		}
		switch alone {
		case policy.Allowed:
			allowed = append(allowed, p.Name())
		case policy.ExplicitDeny:
			explicit = append(explicit, p.Name())
		}
	}
	out := map[string]any{
		"authInfo":     ai,
		"authDecision": decision.String(),
		"allowed":      map[string]any{"policies": s.policyList(allowed)},
		"denied": map[string]any{
			"implicitDeny": map[string]any{"policies": s.policyList(implicitOf(ps, decision, allowed, explicit))},
			"explicitDeny": map[string]any{"policies": s.policyList(explicit)},
		},
		"missingContextValues": nonNil(slices.Compact(slices.Sorted(slices.Values(missing)))),
	}
	if decision != policy.Allowed {
		out["allowed"] = map[string]any{"policies": []any{}}
	}
	return out
}

// implicitOf lists, for an implicit deny, the policies that neither allowed nor denied.
func implicitOf(ps []*policy.Policy, d policy.Decision, allowed, explicit []string) []string {
	if d != policy.ImplicitDeny {
		return nil
	}
	var out []string
	for _, p := range ps {
		if !slices.Contains(allowed, p.Name()) && !slices.Contains(explicit, p.Name()) {
			out = append(out, p.Name())
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
