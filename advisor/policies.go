package advisor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// wildcardProblems lists what makes a policy document over-grant: an Allow with a wildcard action
// ("*", "iot:*"), with NotAction or NotResource (everything but a list), or with a resource whose
// name is a wildcard ("*", "topic/*", "client/*"). Wildcards in the region and account fields of an
// ARN grant nothing more offline and are not counted.
func wildcardProblems(doc []byte) ([]string, error) {
	sts, err := policy.StatementsOf(doc)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, st := range sts {
		if !st.Allow() {
			continue
		}
		where := st.Where()
		for _, a := range st.Action {
			if a == "*" || strings.HasSuffix(a, ":*") {
				out = append(out, fmt.Sprintf("%s allows every action (%q)", where, a))
			}
		}
		if st.NotAction != nil {
			out = append(out, fmt.Sprintf("%s allows every action but %s (NotAction)", where, strings.Join(st.NotAction, ", ")))
		}
		if st.NotResource != nil {
			out = append(out, fmt.Sprintf("%s allows every resource but %s (NotResource)", where, strings.Join(st.NotResource, ", ")))
		}
		for _, r := range st.Resource {
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
