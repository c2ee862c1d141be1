package advisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ggbroker/ggbroker/state"
)

// rawStatement is the part of a policy statement Security_Device_Policies reads.
type rawStatement struct {
	Sid         string          `json:"Sid"`
	Effect      string          `json:"Effect"`
	Action      json.RawMessage `json:"Action"`
	NotAction   json.RawMessage `json:"NotAction"`
	Resource    json.RawMessage `json:"Resource"`
	NotResource json.RawMessage `json:"NotResource"`
}

func stringOrList(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(raw, &many)
	return many
}

// wildcardProblems lists what makes a policy document over-grant: an Allow with a wildcard action
// ("*", "iot:*"), with NotAction or NotResource (everything but a list), or with a resource whose
// name is a wildcard ("*", "topic/*", "client/*"). Wildcards in the region and account fields of an
// ARN grant nothing more offline and are not counted.
func wildcardProblems(doc []byte) ([]string, error) {
	var d struct {
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	var sts []rawStatement
	if json.Unmarshal(d.Statement, &sts) != nil {
		var one rawStatement
		if err := json.Unmarshal(d.Statement, &one); err != nil {
			return nil, fmt.Errorf("Statement: %w", err)
		}
		sts = []rawStatement{one}
	}
	var out []string
	for i, st := range sts {
		if !strings.EqualFold(st.Effect, "Allow") {
			continue
		}
		where := fmt.Sprintf("statement %d", i)
		if st.Sid != "" {
			where += fmt.Sprintf(" (%q)", st.Sid)
		}
		for _, a := range stringOrList(st.Action) {
			if a == "*" || strings.HasSuffix(a, ":*") {
				out = append(out, fmt.Sprintf("%s allows every action (%q)", where, a))
			}
		}
		if len(st.NotAction) > 0 {
			out = append(out, fmt.Sprintf("%s allows every action but %s (NotAction)", where, strings.Join(stringOrList(st.NotAction), ", ")))
		}
		if len(st.NotResource) > 0 {
			out = append(out, fmt.Sprintf("%s allows every resource but %s (NotResource)", where, strings.Join(stringOrList(st.NotResource), ", ")))
		}
		for _, r := range stringOrList(st.Resource) {
			if wildcardResource(r) {
				out = append(out, fmt.Sprintf("%s allows the wildcard resource %q", where, r))
			}
		}
	}
	return out, nil
}

// wildcardResource reports whether a resource names every resource of its kind: "*", an ARN whose
// resource part is "*" or "<kind>/*", or whose name starts with a wildcard.
func wildcardResource(r string) bool {
	if r == "*" {
		return true
	}
	parts := strings.SplitN(r, ":", 6)
	if len(parts) < 6 {
		return strings.HasPrefix(r, "*")
	}
	res := parts[5]
	if res == "*" {
		return true
	}
	_, name, ok := strings.Cut(res, "/")
	return ok && strings.HasPrefix(name, "*")
}

// Security_Device_Policies: the policies attached to the device's ACTIVE certificates must not
// over-grant with wildcards (DA-POL).
func runDevicePolicies(_ context.Context, tc *testCtx) verdict {
	r := tc.run
	var names []string
	for _, id := range r.deviceCerts {
		c, _, err := r.opts.Registry.Certificate(id)
		if err != nil || c == nil {
			return errVerdict("reading certificate %s: %v", id, err)
		}
		for _, p := range c.Policies {
			if !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
	}
	if len(names) == 0 {
		return fail("no policy is attached to thing %q's certificates: the device can do nothing", r.opts.Thing)
	}
	var problems []string
	for _, n := range names {
		path := state.PolicyPath(r.opts.PolicyDir, n)
		raw, err := os.ReadFile(path)
		if err != nil {
			return errVerdict("policy %q: %v", n, err)
		}
		ps, err := wildcardProblems(raw)
		if err != nil {
			return errVerdict("policy %q (%s): %v", n, path, err)
		}
		for _, p := range ps {
			problems = append(problems, fmt.Sprintf("policy %q %s", n, p))
		}
	}
	tc.notef("policies attached: %s", strings.Join(names, ", "))
	if len(problems) > 0 {
		return fail("%s: scope it to the thing (${iot:Connection.Thing.ThingName}) and the topics it uses", strings.Join(problems, "; "))
	}
	return pass()
}
