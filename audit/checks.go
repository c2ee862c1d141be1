package audit

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
)

// Probe names: a thing and a client ID that belong to no device, used to ask the policy engine what
// a policy lets a device do to other devices' resources.
const (
	probeThing       = "audit-probe-thing"
	probeOtherThing  = "audit-probe-other-thing"
	probeOtherClient = "audit-probe-other-client"
)

type auditor struct {
	in       Input
	policies map[string]*policy.Policy
	raw      map[string][]byte
	names    []string
	certs    map[string]*x509.Certificate // certificate ID -> parsed
	ids      []string                     // certificate IDs, sorted
}

func newAuditor(in Input) (*auditor, error) {
	a := &auditor{in: in, policies: map[string]*policy.Policy{}, raw: map[string][]byte{}, certs: map[string]*x509.Certificate{}}
	for _, d := range in.Policies {
		p, err := policy.ParseDocument(d.Name, d.Raw)
		if err != nil {
			return nil, err
		}
		a.policies[d.Name], a.raw[d.Name] = p, d.Raw
		a.names = append(a.names, d.Name)
	}
	sort.Strings(a.names)
	for id, c := range in.Registry.Certificates {
		parsed, err := certs.ParseCertsPEM([]byte(c.PEM))
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", id, err)
		}
		a.certs[id] = parsed[0]
		a.ids = append(a.ids, id)
	}
	sort.Strings(a.ids)
	return a, nil
}

// run runs one check: its findings, how many resources it looked at, a note, and whether it ran.
func (a *auditor) run(check string) ([]Finding, int, string, bool) {
	switch check {
	case CheckPolicyOverlyPermissive:
		return a.overlyPermissive(), len(a.names), "", true
	case CheckPolicyMisconfiguration:
		return a.misconfigured(), len(a.names), "", true
	case CheckDeviceCertificateShared:
		return a.shared(), len(a.ids), "", true
	case CheckConflictingClientIDs:
		if a.in.Records == nil {
			return nil, 0, "no connection records given (--records FILE)", false
		}
		f, n := a.conflictingClientIDs()
		return f, n, "", true
	case CheckDeviceCertificateExpiring:
		return a.deviceExpiring(), len(a.activeIDs()), "", true
	case CheckCACertificateExpiring:
		return a.caExpiring(), len(a.in.CAs), "", true
	case CheckRevokedStillActive:
		f := a.revokedStillActive()
		note := ""
		if a.in.Records == nil {
			note = "registry only: no connection records given"
		}
		return f, len(a.ids), note, true
	case CheckDeviceKeyQuality:
		return a.deviceKeyQuality(), len(a.activeIDs()), "", true
	case CheckCAKeyQuality:
		return a.caKeyQuality(), len(a.in.CAs), "", true
	}
	return nil, 0, "", false
}

func (a *auditor) activeIDs() []string {
	var out []string
	for _, id := range a.ids {
		if a.in.Registry.Certificates[id].Status == auth.StatusActive {
			out = append(out, id)
		}
	}
	return out
}

// identities are the (thing, certificate) pairs a policy is attached to, or a probe thing when it
// is attached to none, so that an unattached policy is judged as if a device had it.
type identity struct {
	thing  string
	certID string
	cert   *x509.Certificate
}

func (a *auditor) identities(policyName string) []identity {
	var out []identity
	for _, id := range a.ids {
		c := a.in.Registry.Certificates[id]
		if !contains(c.Policies, policyName) {
			continue
		}
		for _, th := range c.Things {
			out = append(out, identity{thing: th, certID: id, cert: a.certs[id]})
		}
		if len(c.Things) == 0 {
			out = append(out, identity{thing: probeThing, certID: id, cert: a.certs[id]})
		}
	}
	if len(out) == 0 {
		out = append(out, identity{thing: probeThing})
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, e := range xs {
		if e == x {
			return true
		}
	}
	return false
}

func (a *auditor) evaluate(p *policy.Policy, ctx *policy.Context, action, kind, name string) (policy.Decision, policy.Diagnostic) {
	return policy.NewSet(a.in.Env, p).Evaluate(policy.Request{Action: action, Kind: kind, Name: name, Context: ctx, Now: a.in.Now})
}

func statementName(d policy.Diagnostic) string {
	s := fmt.Sprintf("statement %d", d.Statement)
	if d.Sid != "" {
		s += fmt.Sprintf(" (%q)", d.Sid)
	}
	return s
}

// dataPlaneProbes are requests a device must not be allowed for another device's resources: its
// topics, its shadow, its jobs, and every topic at once (aws IoT Device Defender,
// audit-chk-iot-policy-permissive.md: "send or receive MQTT messages for a broad set of devices, or
// access or modify shadow and job execution data for a broad set of devices").
var dataPlaneProbes = []struct{ action, kind, name, what string }{
	{policy.ActionPublish, policy.KindTopic, probeOtherThing + "/data", "publish on another device's topics"},
	{policy.ActionReceive, policy.KindTopic, probeOtherThing + "/data", "receive another device's messages"},
	{policy.ActionSubscribe, policy.KindTopicFilter, "#", "subscribe to every topic (#)"},
	{policy.ActionPublish, policy.KindTopic, "$aws/things/" + probeOtherThing + "/shadow/update", "update another device's shadow"},
	{policy.ActionPublish, policy.KindTopic, "$aws/things/" + probeOtherThing + "/jobs/get", "read another device's job executions"},
}

// overlyPermissive: IOT_POLICY_OVERLY_PERMISSIVE_CHECK. Each policy is asked, through the policy
// engine the broker uses, whether it lets a device connect with another client ID (the seed's first
// rule: restrict iot:Connect to the thing's own client ID, aws-iot-core/security-best-practices.md)
// or act on another device's topics, shadow or jobs; and whether it allows every IoT action.
func (a *auditor) overlyPermissive() []Finding {
	var out []Finding
	for _, name := range a.names {
		p := a.policies[name]
		var reasons []string
		seen := map[string]bool{}
		add := func(s string) {
			if !seen[s] {
				seen[s] = true
				reasons = append(reasons, s)
			}
		}
		for _, id := range a.identities(name) {
			other := &policy.Context{ClientID: probeOtherClient, CertificateID: id.certID, Certificate: id.cert}
			if dec, diag := a.evaluate(p, other, policy.ActionConnect, policy.KindClient, probeOtherClient); dec == policy.Allowed {
				add(fmt.Sprintf("iot:Connect is not restricted to the thing's own client ID: %s allows client ID %q", statementName(diag), probeOtherClient))
			}
			self := &policy.Context{ClientID: id.thing, CertificateID: id.certID, Certificate: id.cert, Thing: &policy.Thing{Name: id.thing}}
			for _, pr := range dataPlaneProbes {
				if dec, diag := a.evaluate(p, self, pr.action, pr.kind, pr.name); dec == policy.Allowed {
					add(fmt.Sprintf("%s lets thing %s %s (%s on %s)", statementName(diag), id.thing, pr.what, pr.action, pr.name))
				}
			}
		}
		for _, st := range rawStatements(a.raw[name]) {
			if !st.Allow() {
				continue
			}
			for _, act := range st.Action {
				if act == "*" || strings.EqualFold(act, "iot:*") {
					add(fmt.Sprintf("%s allows every AWS IoT action (%q)", st.Where(), act))
				}
			}
		}
		if len(reasons) == 0 {
			continue
		}
		out = append(out, Finding{
			Resource:   Resource{ResourcePolicy, name},
			ReasonCode: "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS",
			Reason:     strings.Join(reasons, "; "),
			Fix: "scope the policy to the device: iot:Connect on client/${iot:Connection.Thing.ThingName}, and topics such as " +
				"topic/${iot:Connection.Thing.ThingName}/* and $aws/things/${iot:Connection.Thing.ThingName}/*; then `ggbroker policy create " + name + " FILE --force`",
		})
	}
	return out
}

// misconfigured: IOT_POLICY_POTENTIAL_MIS_CONFIGURATION_CHECK (audit-chk-iot-misconfigured-policies.md):
// MQTT wildcards in Deny statements, which policies read as literal characters; and topic filters
// denied with "*" that a subscription with an MQTT wildcard at a higher level still reaches.
func (a *auditor) misconfigured() []Finding {
	var out []Finding
	for _, name := range a.names {
		p := a.policies[name]
		for _, st := range rawStatements(a.raw[name]) {
			if st.Allow() || !strings.EqualFold(st.Effect, "Deny") {
				continue
			}
			for _, r := range st.Resource {
				kind, topic, ok := topicResource(r)
				if !ok {
					continue
				}
				if strings.ContainsAny(topic, "+#") {
					out = append(out, Finding{
						Resource: Resource{ResourcePolicy, name}, ReasonCode: "POLICY_CONTAINS_MQTT_WILDCARDS_IN_DENY_STATEMENT",
						Reason: fmt.Sprintf("%s denies %q: in a policy + and # are literal characters, so it denies only that exact %s, not the topics the MQTT wildcard would match", st.Where(), r, kind),
						Fix:    "write the Deny with the policy wildcard * (for example topicfilter/building/control_room/*) and deny iot:Receive on the topics too",
					})
					continue
				}
				if kind != policy.KindTopicFilter || !strings.HasSuffix(topic, "/*") || !hasAction(st, policy.ActionSubscribe) {
					continue
				}
				prefix := strings.TrimSuffix(topic, "/*")
				if strings.ContainsAny(prefix, "*?$") {
					continue
				}
				for _, id := range a.identities(name)[:1] {
					self := &policy.Context{ClientID: id.thing, CertificateID: id.certID, Certificate: id.cert, Thing: &policy.Thing{Name: id.thing}}
					recv, _ := a.evaluate(p, self, policy.ActionReceive, policy.KindTopic, prefix+"/audit-probe")
					if recv != policy.Allowed {
						continue
					}
					for _, f := range widerFilters(prefix) {
						if dec, diag := a.evaluate(p, self, policy.ActionSubscribe, policy.KindTopicFilter, f); dec == policy.Allowed {
							out = append(out, Finding{
								Resource: Resource{ResourcePolicy, name}, ReasonCode: "TOPIC_FILTERS_INTENDED_TO_DENY_ALLOWED_USING_WILDCARDS",
								Reason: fmt.Sprintf("%s denies subscribing to %s/*, but %s allows subscribing to %s, and iot:Receive is allowed on %s/..., so the device still gets those messages",
									st.Where(), prefix, statementName(diag), f, prefix),
								Fix: fmt.Sprintf("also deny iot:Receive on topic/%s/*, or do not allow wildcard subscriptions above %s", prefix, prefix),
							})
							break
						}
					}
				}
			}
		}
	}
	return out
}

// widerFilters are the MQTT filters with a wildcard that match topics under prefix: "#", and
// "<level>/#" for each proper prefix of it.
func widerFilters(prefix string) []string {
	out := []string{"#"}
	levels := strings.Split(prefix, "/")
	for i := 1; i < len(levels); i++ {
		out = append(out, strings.Join(levels[:i], "/")+"/#")
	}
	return out
}

// topicResource splits a topic or topicfilter ARN.
func topicResource(r string) (kind, name string, ok bool) {
	parts := strings.SplitN(r, ":", 6)
	if len(parts) < 6 {
		return "", "", false
	}
	kind, name, ok = strings.Cut(parts[5], "/")
	if !ok || (kind != policy.KindTopic && kind != policy.KindTopicFilter) {
		return "", "", false
	}
	return kind, name, true
}

// shared: DEVICE_CERTIFICATE_SHARED_CHECK (audit-chk-device-cert-shared.md): one certificate used by
// more than one device, as the registry attaches it to several things, or as the connection records
// show it connecting with several client IDs.
func (a *auditor) shared() []Finding {
	var out []Finding
	clients := map[string]map[string]bool{}
	for _, r := range a.records() {
		if r.EventType == "Connect" && r.Status == "Success" && r.PrincipalID != "" {
			if clients[r.PrincipalID] == nil {
				clients[r.PrincipalID] = map[string]bool{}
			}
			clients[r.PrincipalID][r.ClientID] = true
		}
	}
	for _, id := range a.ids {
		c := a.in.Registry.Certificates[id]
		var reasons []string
		if len(c.Things) > 1 {
			reasons = append(reasons, fmt.Sprintf("the certificate is attached to %d things (%s)", len(c.Things), strings.Join(c.Things, ", ")))
		}
		if n := len(clients[id]); n > 1 {
			reasons = append(reasons, fmt.Sprintf("it connected with %d client IDs (%s) in the records", n, strings.Join(sortedKeys(clients[id]), ", ")))
		}
		if len(reasons) == 0 {
			continue
		}
		out = append(out, Finding{
			Resource: Resource{ResourceDeviceCertificate, id}, Reason: strings.Join(reasons, "; "),
			Fix: "give every device its own certificate (`ggbroker device create NAME` per device), then `ggbroker device revoke " + id[:12] + "`",
		})
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// records are the records within the audit window.
func (a *auditor) records() []Record {
	var out []Record
	from := a.in.Now.Add(-a.in.Since)
	for _, r := range a.in.Records {
		if r.Time.IsZero() || !r.Time.Before(from) {
			out = append(out, r)
		}
	}
	return out
}

// conflictingClientIDs: CONFLICTING_CLIENT_IDS_CHECK (audit-chk-conflicting-client-ids.md): client
// IDs whose connection was dropped because another connection used the same client ID.
func (a *auditor) conflictingClientIDs() ([]Finding, int) {
	type dup struct {
		count      int
		principals map[string]bool
		last       time.Time
	}
	dups := map[string]*dup{}
	all := map[string]bool{}
	for _, r := range a.records() {
		all[r.ClientID] = true
		if !r.duplicate() {
			continue
		}
		d := dups[r.ClientID]
		if d == nil {
			d = &dup{principals: map[string]bool{}}
			dups[r.ClientID] = d
		}
		d.count++
		if r.PrincipalID != "" {
			d.principals[r.PrincipalID] = true
		}
		if r.Time.After(d.last) {
			d.last = r.Time
		}
	}
	var out []Finding
	for _, id := range sortedKeys(boolKeys(dups)) {
		d := dups[id]
		var related []Resource
		for _, p := range sortedKeys(d.principals) {
			related = append(related, Resource{ResourceDeviceCertificate, p})
		}
		out = append(out, Finding{
			Resource: Resource{ResourceClientID, id}, Related: related, ReasonCode: "DUPLICATE_CLIENT_ID_ACROSS_CONNECTIONS",
			Reason: fmt.Sprintf("%d connections with client ID %q were dropped because another connection used the same client ID (last at %s; certificates %s)",
				d.count, id, d.last.UTC().Format(time.RFC3339), strings.Join(sortedKeys(d.principals), ", ")),
			Fix: "register each device as its own thing and connect with its thing name as client ID; attach a policy that allows iot:Connect only on client/${iot:Connection.Thing.ThingName}",
		})
	}
	return out, len(all)
}

func boolKeys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func expiring(c *x509.Certificate, now time.Time, window time.Duration) (code, reason string, bad bool) {
	switch {
	case !now.Before(c.NotAfter):
		return "CERTIFICATE_PAST_EXPIRATION", fmt.Sprintf("expired on %s", c.NotAfter.UTC().Format(time.RFC3339)), true
	case c.NotAfter.Sub(now) <= window:
		return "CERTIFICATE_APPROACHING_EXPIRATION", fmt.Sprintf("expires on %s, in %d days", c.NotAfter.UTC().Format(time.RFC3339), int(c.NotAfter.Sub(now).Hours()/24)), true
	}
	return "", "", false
}

// deviceExpiring: DEVICE_CERTIFICATE_EXPIRING_CHECK: ACTIVE device certificates expiring within the
// window (30 days) or expired.
func (a *auditor) deviceExpiring() []Finding {
	var out []Finding
	for _, id := range a.activeIDs() {
		c := a.in.Registry.Certificates[id]
		if code, reason, bad := expiring(a.certs[id], a.in.Now, a.in.ExpiringWithin); bad {
			out = append(out, Finding{
				Resource: Resource{ResourceDeviceCertificate, id}, ReasonCode: code,
				Reason: fmt.Sprintf("the certificate of %s %s", strings.Join(c.Things, ", "), reason),
				Fix:    "issue a new certificate (`ggbroker device create " + firstOr(c.Things, "THING") + " --out DIR` attaches a new one), install it on the device, then `ggbroker device revoke " + id[:12] + "`",
			})
		}
	}
	return out
}

func firstOr(xs []string, def string) string {
	if len(xs) > 0 {
		return xs[0]
	}
	return def
}

// caExpiring: CA_CERTIFICATE_EXPIRING_CHECK over the core device CA, the device CA and the trusted CAs.
func (a *auditor) caExpiring() []Finding {
	var out []Finding
	for _, ca := range a.in.CAs {
		if code, reason, bad := expiring(ca.Cert, a.in.Now, a.in.ExpiringWithin); bad {
			out = append(out, Finding{
				Resource: Resource{ResourceCACertificate, ca.Name}, ReasonCode: code,
				Reason: fmt.Sprintf("%s (%s) %s", ca.Name, ca.Cert.Subject.CommonName, reason),
				Fix:    "make a new CA and move the devices to it before this one expires: devices that trust only this CA stop connecting when it does",
			})
		}
	}
	return out
}

// revokedStillActive: REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK. Offline, revocation is the
// registry's REVOKED status, so a revoked certificate is "still active" when its key is back in an
// ACTIVE certificate, or when the records show it connected and not disconnected since.
func (a *auditor) revokedStillActive() []Finding {
	var out []Finding
	keyOf := func(c *x509.Certificate) string { return string(c.RawSubjectPublicKeyInfo) }
	revokedKeys := map[string]string{}
	for _, id := range a.ids {
		if a.in.Registry.Certificates[id].Status == auth.StatusRevoked {
			revokedKeys[keyOf(a.certs[id])] = id
		}
	}
	for _, id := range a.activeIDs() {
		if rid, ok := revokedKeys[keyOf(a.certs[id])]; ok {
			out = append(out, Finding{
				Resource: Resource{ResourceDeviceCertificate, id}, Related: []Resource{{ResourceDeviceCertificate, rid}},
				Reason: fmt.Sprintf("this ACTIVE certificate has the key of revoked certificate %s: whoever holds the revoked key can still connect", rid[:12]),
				Fix:    "revoke it too (`ggbroker device revoke " + id[:12] + "`) and give the device a new key",
			})
		}
	}
	connected := map[string]Record{}
	for _, r := range a.records() {
		if r.PrincipalID == "" {
			continue
		}
		switch {
		case r.EventType == "Connect" && r.Status == "Success":
			connected[r.PrincipalID+"\x00"+r.ClientID] = r
		case r.EventType == "Disconnect":
			delete(connected, r.PrincipalID+"\x00"+r.ClientID)
		}
	}
	keys := sortedKeys(boolKeys(connected))
	for _, k := range keys {
		r := connected[k]
		c, ok := a.in.Registry.Certificates[r.PrincipalID]
		if !ok || c.Status != auth.StatusRevoked {
			continue
		}
		out = append(out, Finding{
			Resource: Resource{ResourceDeviceCertificate, r.PrincipalID},
			Reason:   fmt.Sprintf("the certificate is REVOKED but client %q connected with it at %s and the records show no disconnection since", r.ClientID, r.Time.UTC().Format(time.RFC3339)),
			Fix:      "restart the broker or disconnect the client so the revocation takes effect, and check who holds the key",
		})
	}
	return out
}

// keyWeakness says why a public key is too weak (audit-chk-device-cert-key-quality.md: RSA keys
// under 2048 bits; here also ECDSA curves under 256 bits), "" if it is not.
func keyWeakness(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Sprintf("RSA key of %d bits, fewer than 2048", n)
		}
		if k.E < 65537 {
			return fmt.Sprintf("RSA public exponent %d, smaller than 65537", k.E)
		}
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().BitSize; n < 256 {
			return fmt.Sprintf("ECDSA key on %s (%d bits), smaller than P-256", k.Curve.Params().Name, n)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Sprintf("key of type %T, which AWS IoT does not accept", pub)
	}
	return ""
}

// deviceKeyQuality: DEVICE_CERTIFICATE_KEY_QUALITY_CHECK over ACTIVE device certificates.
func (a *auditor) deviceKeyQuality() []Finding {
	var out []Finding
	for _, id := range a.activeIDs() {
		if why := keyWeakness(a.certs[id].PublicKey); why != "" {
			c := a.in.Registry.Certificates[id]
			out = append(out, Finding{
				Resource: Resource{ResourceDeviceCertificate, id},
				Reason:   fmt.Sprintf("the certificate of %s has a %s", strings.Join(c.Things, ", "), why),
				Fix:      "make a new key and certificate (ECDSA P-256 or RSA 2048+: `ggbroker device create " + firstOr(c.Things, "THING") + "`), install it, then `ggbroker device revoke " + id[:12] + "`",
			})
		}
	}
	return out
}

// caKeyQuality: CA_CERTIFICATE_KEY_QUALITY_CHECK over the CAs.
func (a *auditor) caKeyQuality() []Finding {
	var out []Finding
	for _, ca := range a.in.CAs {
		if why := keyWeakness(ca.Cert.PublicKey); why != "" {
			out = append(out, Finding{
				Resource: Resource{ResourceCACertificate, ca.Name},
				Reason:   fmt.Sprintf("%s (%s) has a %s", ca.Name, ca.Cert.Subject.CommonName, why),
				Fix:      "replace the CA with one with an ECDSA P-256 or RSA 2048+ key and reissue the certificates it signed",
			})
		}
	}
	return out
}

// rawStatements are a document's statements as written (none when it does not parse: the engine's
// checks report that document).
func rawStatements(doc []byte) []policy.StatementText {
	sts, _ := policy.StatementsOf(doc)
	return sts
}

// hasAction reports whether a statement's Action names action, or every action.
func hasAction(st policy.StatementText, action string) bool {
	for _, a := range st.Action {
		if a == "*" || strings.EqualFold(a, "iot:*") || strings.EqualFold(a, action) {
			return true
		}
	}
	return false
}
