package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

func newPolicyCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage AWS IoT policies and check what they allow",
		Long: `AWS IoT policy documents live in the policy directory (authorization.policyDir, default
<stateDir>/policies), one file <name>.json per policy, and are attached to device certificates in the
registry, as in AWS IoT. A running broker applies every change to its next decision, without a restart.`,
	}
	cmd.AddCommand(newPolicyListCommand(g), newPolicyShowCommand(g), newPolicyCreateCommand(g),
		newPolicyAttachCommand(g, true), newPolicyAttachCommand(g, false), newPolicyCheckCommand(g))
	return cmd
}

func newPolicyListCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the policies and the things whose certificates they are attached to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			names, err := state.PolicyNames(st.PolicyDir)
			if err != nil {
				return err
			}
			data, err := st.Registry.Snapshot()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POLICY\tATTACHED TO")
			for _, n := range names {
				var things []string
				for _, c := range data.Certificates {
					for _, p := range c.Policies {
						if p == n {
							things = append(things, strings.Join(c.Things, ",")+"("+c.ID[:8]+")")
						}
					}
				}
				fmt.Fprintf(tw, "%s\t%s\n", n, strings.Join(things, " "))
			}
			return tw.Flush()
		},
	}
}

func newPolicyShowCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Print a policy document",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(state.PolicyPath(st.PolicyDir, args[0]))
			if err != nil {
				return fmt.Errorf("policy %q: %w", args[0], err)
			}
			_, err = cmd.OutOrStdout().Write(raw)
			return err
		},
	}
}

func newPolicyCreateCommand(g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "create NAME FILE",
		Short: "Check a policy document and store it as policy NAME",
		Long: `Parse FILE as an AWS IoT policy document (refusing it, with the statement and the reason, if it is
malformed) and store it in the policy directory as NAME. --force replaces an existing policy, which every
certificate it is attached to gets at its next decision.

It warns (and stores the document, as AWS IoT does) about actions AWS IoT never checks, such as
iot:Publsh or foo:bar, and about thing policy variables (iot:Connection.Thing.*) in statements about
greengrass: actions, which AWS does not resolve: use a wildcard such as thing/MyDevice* there.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, file := args[0], args[1]
			if err := checkPolicyName(name); err != nil {
				return err
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			p, err := policy.ParseDocument(name, raw)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			// AWS IoT stores these too; they are warnings, not refusals, so a document that works in
			// the cloud is never refused here.
			for _, w := range p.Warnings() {
				fmt.Fprintf(cmd.ErrOrStderr(), "ggbroker: warning: %s: %s\n", file, w)
			}
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			path := state.PolicyPath(st.PolicyDir, name)
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("policy %q exists (%s): use --force to replace it", name, path)
			}
			if err := certs.WriteFileAtomic(path, raw, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy %s stored in %s\n", name, path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing policy")
	return cmd
}

// checkPolicyName applies AWS IoT's rule for policy names (1-128 of [\w+=,.@-]).
func checkPolicyName(name string) error {
	if name == "" || len(name) > 128 || strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_+=,.@-", r))
	}) >= 0 {
		return fmt.Errorf("policy name %q is invalid: use 1 to 128 characters of a-z, A-Z, 0-9 and _+=,.@-, as AWS IoT does", name)
	}
	return nil
}

func newPolicyAttachCommand(g *globalFlags, attach bool) *cobra.Command {
	verb, short := "attach", "Attach a policy to a device's certificate(s)"
	if !attach {
		verb, short = "detach", "Detach a policy from a device's certificate(s)"
	}
	return &cobra.Command{
		Use:   verb + " NAME THING|CERTIFICATE_ID",
		Short: short,
		Long:  short + ".\nTHING selects all certificates attached to that thing; a certificate ID may be a unique prefix of 8+ characters.",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			name, ref := args[0], args[1]
			var ids []string
			if attach {
				if _, err := state.ParsePolicyFile(state.PolicyPath(st.PolicyDir, name), name); err != nil {
					return fmt.Errorf("cannot attach: %w", err)
				}
				ids, err = st.Registry.AttachPolicy(ref, name)
			} else {
				ids, err = st.Registry.DetachPolicy(ref, name)
			}
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s %sed: certificate %s\n", name, verb, id)
			}
			return nil
		},
	}
}

// checkFlags are `policy check`'s inputs.
type checkFlags struct {
	action, resource, clientID string
	policyFiles                []string
	certFile, certID           string
	thing, thingType           string
	thingAttrs                 []string
	sourceIP                   string
	connectAttrs               []string
	lastWillTopic              string
	asJSON                     bool
}

// checkResult is `policy check --json`'s answer.
type checkResult struct {
	Decision   string   `json:"decision"`
	Action     string   `json:"action"`
	Resource   string   `json:"resource"`
	Policy     string   `json:"policy,omitempty"`
	Statement  int      `json:"statement"`
	Sid        string   `json:"sid,omitempty"`
	Reason     string   `json:"reason"`
	Unresolved []string `json:"unresolved,omitempty"`
	Policies   []string `json:"policiesEvaluated"`
}

func newPolicyCheckCommand(g *globalFlags) *cobra.Command {
	var f checkFlags
	cmd := &cobra.Command{
		Use:   "check --action ACTION --resource RESOURCE [--client-id ID] [flags]",
		Short: "Evaluate policies offline, like AWS IoT's TestAuthorization",
		Long: `Evaluate an action on a resource for a client, and print ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY with the
deciding policy and statement. The policies are the --policy files, or else those attached in the registry to
the certificate (--cert or --cert-id; by default the one certificate of the thing named by --thing or the client
ID), or, when the config uses Greengrass device groups, the policies of the thing's groups.

--action must be an action AWS IoT checks (iot:Publish, iot:ListRetainedMessages, iotjobsdata:UpdateJobExecution,
greengrass:Discover ...): a misspelt one is refused, not answered IMPLICIT_DENY. --resource takes a full ARN,
* (for actions whose resource is *, such as iot:ListRetainedMessages), or a short form (client/ID, topic/T,
topicfilter/F, thing/NAME), expanded with core.region and core.accountId. --client-id is optional, as in
TestAuthorization: without it ${iot:ClientId} does not resolve. Exit status: 0 ALLOWED, 1 denied, 2 bad input.`,
		Example: `  ggbroker policy check --action iot:Publish --resource topic/sensors/sensor-1/temp --client-id sensor-1
  ggbroker policy check --action iot:Subscribe --resource topicfilter/a/+/b --client-id c1 --policy my-policy.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := runPolicyCheck(g, &f)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if f.asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n  action:   %s\n  resource: %s\n  why:      %s\n  policies: %s\n",
					res.Decision, res.Action, res.Resource, res.Reason, strings.Join(res.Policies, ", "))
			}
			if res.Decision != policy.Allowed.String() {
				return &exitError{code: 1, err: errors.New("")} // the answer is printed already
			}
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	fs := cmd.Flags()
	fs.StringVar(&f.action, "action", "", "action, e.g. iot:Publish (required)")
	fs.StringVar(&f.resource, "resource", "", "resource ARN, *, or short form topic/T, topicfilter/F, client/ID, thing/NAME (required)")
	fs.StringVar(&f.clientID, "client-id", "", "MQTT client ID (optional: actions such as iot:ListRetainedMessages have none)")
	fs.StringArrayVar(&f.policyFiles, "policy", nil, "policy document file to evaluate (repeatable; default: the registry's)")
	fs.StringVar(&f.certFile, "cert", "", "device certificate PEM (Certificate.* variables; its attached policies)")
	fs.StringVar(&f.certID, "cert-id", "", "registered certificate ID (or unique prefix)")
	fs.StringVar(&f.thing, "thing", "", "thing name for the thing context (default: the client ID, if it is a registered thing)")
	fs.StringVar(&f.thingType, "thing-type", "", "thing type name (overrides the registry's)")
	fs.StringArrayVar(&f.thingAttrs, "thing-attr", nil, "thing attribute key=value (repeatable; overrides the registry's)")
	fs.StringVar(&f.sourceIP, "source-ip", "", "aws:SourceIp")
	fs.StringArrayVar(&f.connectAttrs, "connect-attr", nil, "iot:ConnectAttributes value: PersistentConnect or LastWill (repeatable)")
	fs.StringVar(&f.lastWillTopic, "last-will-topic", "", "iot:LastWillTopic")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	return cmd
}

// runPolicyCheck gathers the policies and context and evaluates; errors are bad input (exit 2).
func runPolicyCheck(g *globalFlags, f *checkFlags) (*checkResult, error) {
	for flag, v := range map[string]string{"--action": f.action, "--resource": f.resource} {
		if v == "" {
			return nil, fmt.Errorf("%s is required", flag)
		}
	}
	if err := policy.CheckAction(f.action); err != nil {
		return nil, fmt.Errorf("--action: %w", err)
	}
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	st, err := state.OpenState(cfg)
	if err != nil {
		return nil, err
	}
	env := policy.Env{Region: cfg.Core.Region, AccountID: cfg.Core.AccountID}
	arn, err := policy.ExpandResource(env, f.resource)
	if err != nil {
		return nil, fmt.Errorf("--resource: %w", err)
	}
	ctx := &policy.Context{ClientID: f.clientID, LastWillTopic: f.lastWillTopic, ConnectAttributes: f.connectAttrs}
	if f.sourceIP != "" {
		if ctx.SourceIP, err = netip.ParseAddr(f.sourceIP); err != nil {
			return nil, fmt.Errorf("--source-ip: %w", err)
		}
	}
	rec, err := checkCertificate(st, f, ctx)
	if err != nil {
		return nil, err
	}
	thingName := f.thing
	if thingName == "" && (rec == nil || rec.AttachedTo(f.clientID)) {
		thingName = f.clientID
	}
	if err := checkThing(st, f, thingName, ctx); err != nil {
		return nil, err
	}

	var ps []*policy.Policy
	switch {
	case len(f.policyFiles) > 0:
		for _, file := range f.policyFiles {
			p, err := state.ParsePolicyFile(file, strings.TrimSuffix(file, ".json"))
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
	case usesDeviceGroups(cfg):
		groups, err := policy.ParseDeviceGroupsValue(cfg.ClientDeviceAuth.DeviceGroups)
		if err != nil {
			return nil, fmt.Errorf("clientDeviceAuth.deviceGroups: %w", err)
		}
		ps = groups.PoliciesFor(thingName)
	case rec != nil:
		names := slices.Clone(rec.Policies)
		// The policies of the thing's groups apply as the broker applies them: when the connection acts
		// as a thing the certificate is attached to (auth.ThingGroup).
		if ctx.Thing != nil && rec.AttachedTo(ctx.Thing.Name) {
			d, err := st.Registry.Snapshot()
			if err != nil {
				return nil, err
			}
			for _, g := range d.GroupsOf(ctx.Thing.Name) {
				for _, n := range d.ThingGroups[g].Policies {
					if !slices.Contains(names, n) {
						names = append(names, n)
					}
				}
			}
		}
		for _, name := range names {
			p, err := state.ParsePolicyFile(state.PolicyPath(st.PolicyDir, name), name)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
	default:
		return nil, errors.New("no policies to evaluate: give --policy FILE, or --cert/--cert-id, or a --thing (or client ID) with exactly one registered certificate")
	}
	d, diag := policy.NewSet(env, ps...).Evaluate(policy.Request{Action: f.action, ARN: arn, Context: ctx})
	res := &checkResult{Decision: d.String(), Action: f.action, Resource: arn, Policy: diag.Policy, Statement: diag.Statement,
		Sid: diag.Sid, Reason: diag.String(), Unresolved: diag.Unresolved, Policies: []string{}}
	for _, p := range ps {
		res.Policies = append(res.Policies, p.Name())
	}
	return res, nil
}

func usesDeviceGroups(cfg *config.Config) bool {
	return cfg.Authorization.Mode == config.AuthzDeviceGroups ||
		cfg.Authorization.Mode == config.AuthzAuto && cfg.ClientDeviceAuth.DeviceGroups != nil
}

// checkCertificate finds the certificate context: --cert, --cert-id, or the one certificate of the
// thing (--thing or client ID). It returns the registry record, nil if the certificate is unregistered.
func checkCertificate(st *state.State, f *checkFlags, ctx *policy.Context) (*auth.Certificate, error) {
	switch {
	case f.certFile != "":
		raw, err := os.ReadFile(f.certFile)
		if err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}
		parsed, err := certs.ParseCertsPEM(raw)
		if err != nil {
			return nil, fmt.Errorf("--cert %s: %w", f.certFile, err)
		}
		ctx.Certificate, ctx.CertificateID = parsed[0], certs.Fingerprint(parsed[0])
		rec, _, err := st.Registry.Certificate(ctx.CertificateID)
		return rec, err
	case f.certID != "":
		return lookupCertificate(st, f.certID, ctx)
	}
	name := f.thing
	if name == "" {
		name = f.clientID
	}
	cs, err := st.Registry.CertificatesOf(name)
	if err != nil || len(cs) != 1 {
		return nil, err
	}
	return lookupCertificate(st, cs[0].ID, ctx)
}

func lookupCertificate(st *state.State, ref string, ctx *policy.Context) (*auth.Certificate, error) {
	rec, parsed, err := st.Registry.CertificateByRef(ref)
	if err != nil {
		return nil, fmt.Errorf("--cert-id: %w", err)
	}
	ctx.Certificate, ctx.CertificateID = parsed, rec.ID
	return rec, nil
}

// checkThing fills the thing context from the registry and the --thing-* flags.
func checkThing(st *state.State, f *checkFlags, name string, ctx *policy.Context) error {
	if name == "" {
		return nil
	}
	t := &policy.Thing{Name: name, TypeName: f.thingType, Attributes: map[string]string{}}
	if reg, ok, err := st.Registry.Thing(name); err != nil {
		return err
	} else if ok {
		if t.TypeName == "" {
			t.TypeName = reg.TypeName
		}
		for k, v := range reg.Attributes {
			t.Attributes[k] = v
		}
	} else if f.thing == "" && f.thingType == "" && len(f.thingAttrs) == 0 {
		return nil // the client ID is not a thing: thing variables do not resolve, as in AWS IoT
	}
	for _, kv := range f.thingAttrs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("--thing-attr %q: want key=value", kv)
		}
		t.Attributes[k] = v
	}
	ctx.Thing = t
	return nil
}
