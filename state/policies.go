package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
)

// defaultDevicePolicy is what `device create` attaches when no --policy is given. It gives a device
// its own resources and nothing of another device's, as AWS' security best practices ask ("scope down
// the permissions per device as much as possible [...] only allows it to connect with a known client
// ID, and to publish and subscribe to an identified and fixed set of topics",
// aws-iot-core/security-best-practices.md), so that a fresh state directory passes `ggbroker audit`'s
// IOT_POLICY_OVERLY_PERMISSIVE_CHECK (issue 15):
//   - connect with its own thing name as client ID;
//   - publish (retained too), receive and subscribe under its own thing name: topic
//     <thing>/..., the topic policy of aws-iot-core/pub-sub-policy.md with
//     ${iot:Connection.Thing.ThingName}; a filter such as <thing>/# matches topicfilter/<thing>/*
//     because + and # are literal characters in a policy;
//   - its own Device Shadow and Jobs topics ($aws/things/<its thing>/shadow/* and /jobs/*) and their
//     HTTPS actions on its own thing, so that a newcomer's device can use its shadow and jobs at once;
//   - Greengrass discovery (which thing a certificate may discover is checked apart: it must be
//     attached to it; thing policy variables do not resolve for greengrass: actions).
//
// Devices that talk across each other's topics (a dashboard reading every sensor, a shared command
// topic) need a policy that says so, attached with `device create --policy` or `policy attach`: the
// default no longer grants every topic outside $aws/ as it did before issue 15. Everything here is
// an Allow, never a Deny, so another attached policy can widen it.
const defaultDevicePolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ConnectWithOwnThingName",
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"
    },
    {
      "Sid": "PublishReceiveOwnTopics",
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:RetainPublish", "iot:Receive"],
      "Resource": "arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"
    },
    {
      "Sid": "SubscribeOwnTopics",
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": "arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"
    },
    {
      "Sid": "JobsPublishReceiveOwnThing",
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive"],
      "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"
    },
    {
      "Sid": "JobsSubscribeOwnThing",
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"
    },
    {
      "Sid": "JobsHTTPSOwnThing",
      "Effect": "Allow",
      "Action": ["iotjobsdata:DescribeJobExecution", "iotjobsdata:GetPendingJobExecutions", "iotjobsdata:StartNextPendingJobExecution", "iotjobsdata:UpdateJobExecution"],
      "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"
    },
    {
      "Sid": "OwnShadowPublishReceive",
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive"],
      "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"
    },
    {
      "Sid": "OwnShadowSubscribe",
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"
    },
    {
      "Sid": "OwnShadowHTTPS",
      "Effect": "Allow",
      "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow", "iot:ListNamedShadowsForThing"],
      "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"
    },
    {
      "Sid": "GreengrassDiscovery",
      "Effect": "Allow",
      "Action": "greengrass:Discover",
      "Resource": "arn:aws:iot:*:*:thing/*"
    }
  ]
}
`

// broadDefaultSids are the statements of the default device policy before issue 15 that allowed
// every device every topic outside $aws/ (Allow with NotResource topic/$aws/*). ensureDefaultPolicy
// keeps an existing file, so a state directory made then still has them: OpenState warns.
var broadDefaultSids = []string{"PublishReceiveOutsideAws", "SubscribeOutsideAws"}

// broadDefaultPolicy reports whether the policy file at path has one of broadDefaultSids; an
// unreadable file is LoadPolicies' business, not this warning's.
func broadDefaultPolicy(path string) bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var doc struct {
		Statement json.RawMessage
	}
	if json.Unmarshal(raw, &doc) != nil {
		return false
	}
	var list []struct{ Sid string }
	if json.Unmarshal(doc.Statement, &list) != nil {
		var one struct{ Sid string }
		if json.Unmarshal(doc.Statement, &one) != nil {
			return false
		}
		list = append(list, one)
	}
	for _, st := range list {
		if slices.Contains(broadDefaultSids, st.Sid) {
			return true
		}
	}
	return false
}

// policyFileExt is the extension of policy documents in the policy directory: <name>.json.
const policyFileExt = ".json"

// PolicyPath is the file of the named policy in dir.
func PolicyPath(dir, name string) string { return filepath.Join(dir, name+policyFileExt) }

// ensureDefaultPolicy writes the default device policy into dir unless a file of that name exists
// (a user's edit of it is kept).
func ensureDefaultPolicy(dir, name string) (created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("policy directory %s: %w", dir, err)
	}
	path := PolicyPath(dir, name)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := certs.WriteFileAtomic(path, []byte(defaultDevicePolicy), 0o644); err != nil {
		return false, fmt.Errorf("write default device policy: %w", err)
	}
	return true, nil
}

// LoadPolicies parses every <name>.json in dir. One bad document fails the whole load, naming the
// file and (through policy.ParseError) the statement, so a broken edit is never half applied.
func LoadPolicies(dir string) (map[string]*policy.Policy, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policy directory %s: %w", dir, err)
	}
	out := make(map[string]*policy.Policy)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), policyFileExt) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), policyFileExt)
		p, err := ParsePolicyFile(filepath.Join(dir, e.Name()), name)
		if err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

// ParsePolicyFile parses one policy document file.
func ParsePolicyFile(path, name string) (*policy.Policy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	p, err := policy.ParseDocument(name, raw)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	return p, nil
}

// PolicyNames lists the policies in dir, sorted.
func PolicyNames(dir string) ([]string, error) {
	ps, err := LoadPolicies(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
