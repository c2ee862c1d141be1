package policy

import (
	"fmt"
	"strings"
)

// policyActions are the actions an AWS IoT policy can grant, by vendor prefix (lower case). AWS IoT stores
// a policy naming any other action without complaint and then never matches it, so a typo such as
// iot:Publsh silently denies; ggbroker warns about them (Policy.Warnings) and `policy check` refuses
// to evaluate one.
//
//   - iot: aws-iot-core/iot-policy-actions.md (MQTT, Device Shadow, job execution and credential
//     provider actions).
//   - iotjobsdata: the job execution actions of the jobs HTTPS data plane (the page's note: "The job
//     execution policy actions apply only for the HTTP TLS endpoint").
//   - greengrass: greengrass-v2/device-auth.md, "AWS IoT Greengrass V2 policy actions" (core device
//     actions and the client device action greengrass:Discover).
var policyActions = map[string][]string{
	"iot": {
		"iot:Connect", "iot:GetRetainedMessage", "iot:ListRetainedMessages", "iot:Publish", "iot:Receive",
		"iot:RetainPublish", "iot:Subscribe",
		"iot:DeleteThingShadow", "iot:GetThingShadow", "iot:ListNamedShadowsForThing", "iot:UpdateThingShadow",
		"iot:DescribeJobExecution", "iot:GetPendingJobExecutions", "iot:UpdateJobExecution",
		"iot:StartNextPendingJobExecution", "iot:AssumeRoleWithCertificate",
	},
	"iotjobsdata": {
		"iotjobsdata:DescribeJobExecution", "iotjobsdata:GetPendingJobExecutions", "iotjobsdata:UpdateJobExecution",
		"iotjobsdata:StartNextPendingJobExecution",
	},
	"greengrass": {
		"greengrass:GetComponentVersionArtifact", "greengrass:ResolveComponentCandidates",
		"greengrass:GetDeploymentConfiguration", "greengrass:ListThingGroupsForCoreDevice",
		"greengrass:VerifyClientDeviceIdentity", "greengrass:VerifyClientDeviceIoTCertificateAssociation",
		"greengrass:PutCertificateAuthorities", "greengrass:GetConnectivityInfo", "greengrass:UpdateConnectivityInfo",
		GreengrassDiscover,
	},
}

// KnownAction reports whether action (no wildcards; case-insensitive, as IAM matches actions) is one
// an AWS IoT policy can grant, returning its canonical spelling.
func KnownAction(action string) (string, bool) {
	vendor, _, ok := strings.Cut(action, ":")
	if !ok {
		return "", false
	}
	for _, a := range policyActions[strings.ToLower(vendor)] {
		if strings.EqualFold(a, action) {
			return a, true
		}
	}
	return "", false
}

// CheckAction refuses an action to evaluate that AWS IoT never checks, suggesting the known action it
// is closest to, so that `policy check --action iot:Publsh` says so instead of answering IMPLICIT_DENY.
func CheckAction(action string) error {
	if _, ok := KnownAction(action); ok {
		return nil
	}
	if strings.ContainsAny(action, "*?") {
		return fmt.Errorf("action %q has a wildcard: name one action, such as iot:Publish", action)
	}
	return fmt.Errorf("action %q is not an AWS IoT policy action%s; known actions: %s", action, suggestion(action), strings.Join(KnownActions(), ", "))
}

// KnownActions lists the actions an AWS IoT policy can grant: iot:, iotjobsdata:, greengrass:.
func KnownActions() []string {
	var out []string
	for _, v := range []string{"iot", "iotjobsdata", "greengrass"} {
		out = append(out, policyActions[v]...)
	}
	return out
}

// suggestion is ` (did you mean X?)` for the known action closest to a, if one is close.
func suggestion(a string) string {
	best, bestD := "", 3
	for _, k := range KnownActions() {
		if d := editDistance(strings.ToLower(a), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Warnings are what a parsed AWS IoT policy document says that AWS IoT would accept but that does not
// do what its author meant: actions AWS IoT never checks, and thing policy variables in statements
// about greengrass: actions, which AWS does not resolve. `ggbroker policy create` prints them.
func (p *Policy) Warnings() []string { return p.warnings }

// lint fills p.warnings from the statements and the actions as written.
func (p *Policy) lint(actions [][]string) {
	for i, st := range p.statements {
		where := "statement " + fmt.Sprint(st.index)
		if st.sid != "" {
			where += fmt.Sprintf(" (Sid %q)", st.sid)
		}
		greengrass := false
		for _, k := range policyActions["greengrass"] {
			greengrass = greengrass || st.actionApplies(k)
		}
		for _, a := range actions[i] {
			vendor, _, _ := strings.Cut(a, ":")
			vendor = strings.ToLower(vendor)
			if a == "*" {
				continue
			}
			known, ok := policyActions[vendor]
			switch {
			case !ok && !strings.ContainsAny(vendor, "*?"):
				p.warnings = append(p.warnings, fmt.Sprintf("%s: action %q: AWS IoT policies know no %q actions (iot:, iotjobsdata:, greengrass:); this entry never matches", where, a, vendor+":"))
			case ok && !matchesAny(a, known):
				hint := suggestion(a)
				if hint == "" {
					hint = fmt.Sprintf(" (known %s: actions: %s)", vendor, strings.Join(known, ", "))
				}
				p.warnings = append(p.warnings, fmt.Sprintf("%s: action %q is not an AWS IoT policy action%s; this entry never matches", where, a, hint))
			}
		}
		if greengrass && st.thingVars {
			p.warnings = append(p.warnings, fmt.Sprintf("%s: thing policy variables (iot:Connection.Thing.*) are not supported for greengrass: actions, so AWS never matches this statement for them; use a wildcard that matches the devices' names instead, such as thing/MyGreengrassDevice* (greengrass-v2/device-auth.md)", where))
		}
	}
}

// matchesAny reports whether the action pattern a (with * and ? wildcards) names at least one of known.
func matchesAny(a string, known []string) bool {
	p, err := compilePattern(strings.ToLower(a), patternOpts{wildcards: true})
	if err != nil {
		return false
	}
	for _, k := range known {
		if p.literalMatch(strings.ToLower(k), false) {
			return true
		}
	}
	return false
}
