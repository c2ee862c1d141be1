package audit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const scoped = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":["arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*","arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/*"]},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"}]}`

// world is a fixture: a device CA, a core CA, things with certificates, policies and records.
type world struct {
	t       *testing.T
	devCA   *certs.Authority
	data    *auth.Data
	pols    []PolicyDoc
	cas     []CA
	records []Record
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, data: &auth.Data{Things: map[string]*auth.Thing{}, Certificates: map[string]*auth.Certificate{}}}
	w.devCA = w.ca("device CA", nil, now.Add(5*365*24*time.Hour))
	w.cas = append(w.cas, CA{Name: "device CA", Cert: w.devCA.Cert}, CA{Name: "core device CA", Cert: w.ca("core CA", nil, now.Add(5*365*24*time.Hour)).Cert})
	return w
}

func (w *world) ca(cn string, key crypto.Signer, notAfter time.Time) *certs.Authority {
	w.t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			w.t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		w.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &certs.Authority{Cert: c, Key: key}
}

// device registers a certificate for the things with the policies; key nil makes a P-256 key.
func (w *world) device(things []string, policies []string, status auth.Status, key crypto.Signer, notAfter time.Time) string {
	w.t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			w.t.Fatal(err)
		}
	}
	c, err := w.devCA.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: things[0]}, NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, key.Public())
	if err != nil {
		w.t.Fatal(err)
	}
	id := certs.Fingerprint(c)
	for _, th := range things {
		w.data.Things[th] = &auth.Thing{Name: th}
	}
	w.data.Certificates[id] = &auth.Certificate{ID: id, PEM: string(certs.EncodeCertsPEM(c)), Status: status, Things: things, Policies: policies}
	return id
}

func (w *world) policy(name, doc string) {
	w.pols = append(w.pols, PolicyDoc{Name: name, Raw: []byte(doc)})
}

func (w *world) audit() *Report {
	w.t.Helper()
	rep, err := Run(Input{Registry: w.data, Policies: w.pols, CAs: w.cas, Records: w.records, Env: policy.Env{Region: "us-east-1", AccountID: "123456789012"}, Now: now})
	if err != nil {
		w.t.Fatal(err)
	}
	return rep
}

// clean is a fleet that passes every check.
func clean(t *testing.T) *world {
	w := newWorld(t)
	w.policy("scoped", scoped)
	id := w.device([]string{"sensor-1"}, []string{"scoped"}, auth.StatusActive, nil, now.Add(365*24*time.Hour))
	w.records = []Record{
		{Time: now.Add(-time.Hour), EventType: "Connect", Status: "Success", ClientID: "sensor-1", PrincipalID: id},
		{Time: now.Add(-time.Minute), EventType: "Disconnect", Status: "Success", ClientID: "sensor-1", PrincipalID: id, DisconnectReason: "CLIENT_INITIATED_DISCONNECT"},
	}
	return w
}

func TestCleanFleetHasNoFinding(t *testing.T) {
	rep := clean(t).audit()
	if len(rep.Findings) != 0 {
		t.Fatalf("findings on a clean fleet: %+v", rep.Findings)
	}
	for _, c := range rep.Checks {
		if c.Status != "COMPLETED_COMPLIANT" || !c.Compliant {
			t.Errorf("%s: %s", c.Name, c.Status)
		}
	}
	if rep.FailsAt(Low) {
		t.Error("a clean fleet fails at low")
	}
}

// TestEachFindingFromItsFixture: one fixture per finding; each yields findings of exactly its check,
// naming the resource, with a reason and a fix.
func TestEachFindingFromItsFixture(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	cases := []struct {
		name     string
		setup    func(w *world) string // returns the resource ID expected
		check    string
		reason   string
		severity Severity
	}{
		{"Connect on any client ID", func(w *world) string {
			w.policy("loose-connect", `{"Version":"2012-10-17","Statement":[{"Sid":"Any","Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/*"}]}`)
			return "loose-connect"
		}, CheckPolicyOverlyPermissive, `iot:Connect is not restricted to the thing's own client ID: statement 0 ("Any")`, Critical},
		{"Connect with ${iot:ClientId}", func(w *world) string {
			w.policy("clientid-var", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:ClientId}"}]}`)
			return "clientid-var"
		}, CheckPolicyOverlyPermissive, "iot:Connect is not restricted", Critical},
		{"publish on every topic", func(w *world) string {
			w.policy("all-topics", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/*"}]}`)
			w.device([]string{"t1"}, []string{"all-topics"}, auth.StatusActive, nil, now.Add(time.Hour*24*365))
			return "all-topics"
		}, CheckPolicyOverlyPermissive, "lets thing t1 publish on another device's topics", Critical},
		{"other devices' shadows", func(w *world) string {
			w.policy("shadows", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/$aws/things/*/shadow/*"}]}`)
			return "shadows"
		}, CheckPolicyOverlyPermissive, "update another device's shadow", Critical},
		{"iot:*", func(w *world) string {
			w.policy("star", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}}`)
			return "star"
		}, CheckPolicyOverlyPermissive, `allows every AWS IoT action ("iot:*")`, Critical},
		{"MQTT wildcard in a Deny", func(w *world) string {
			w.policy("deny-hash", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"},
				{"Effect":"Deny","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/building/control_room/#"}]}`)
			return "deny-hash"
		}, CheckPolicyMisconfiguration, "POLICY_CONTAINS_MQTT_WILDCARDS_IN_DENY_STATEMENT", Medium},
		{"Deny with * reached through a wildcard subscription", func(w *world) string {
			w.policy("deny-star", `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/building/*"},
				{"Effect":"Deny","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/building/control_room/*"},
				{"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/building/*"}]}`)
			return "deny-star"
		}, CheckPolicyMisconfiguration, "TOPIC_FILTERS_INTENDED_TO_DENY_ALLOWED_USING_WILDCARDS", Medium},
		{"certificate attached to two things", func(w *world) string {
			return w.device([]string{"a1", "a2"}, []string{"scoped"}, auth.StatusActive, nil, now.Add(time.Hour*24*365))
		}, CheckDeviceCertificateShared, "attached to 2 things (a1, a2)", Critical},
		{"certificate used by two client IDs", func(w *world) string {
			id := w.device([]string{"b1"}, []string{"scoped"}, auth.StatusActive, nil, now.Add(time.Hour*24*365))
			w.records = append(w.records, Record{Time: now.Add(-time.Hour), EventType: "Connect", Status: "Success", ClientID: "b1", PrincipalID: id},
				Record{Time: now.Add(-time.Hour), EventType: "Connect", Status: "Success", ClientID: "b1-clone", PrincipalID: id})
			return id
		}, CheckDeviceCertificateShared, "connected with 2 client IDs (b1, b1-clone)", Critical},
		{"DUPLICATE_CLIENT_ID disconnections", func(w *world) string {
			for i := range 3 {
				w.records = append(w.records, Record{Time: now.Add(-time.Duration(i) * time.Hour), EventType: "Disconnect", Status: "Failure", ClientID: "sensor-1",
					PrincipalID: "abc", DisconnectReason: "DUPLICATE_CLIENTID", Reason: "DUPLICATE_CLIENT_ID"})
			}
			w.records = append(w.records, Record{Time: now.Add(-40 * 24 * time.Hour), EventType: "Disconnect", ClientID: "old", DisconnectReason: "DUPLICATE_CLIENTID"})
			return "sensor-1"
		}, CheckConflictingClientIDs, "3 connections with client ID \"sensor-1\" were dropped", High},
		{"device certificate expiring in 10 days", func(w *world) string {
			return w.device([]string{"c1"}, []string{"scoped"}, auth.StatusActive, nil, now.Add(10*24*time.Hour))
		}, CheckDeviceCertificateExpiring, "CERTIFICATE_APPROACHING_EXPIRATION", Medium},
		{"device certificate expired", func(w *world) string {
			return w.device([]string{"c2"}, []string{"scoped"}, auth.StatusActive, nil, now.Add(-time.Minute))
		}, CheckDeviceCertificateExpiring, "CERTIFICATE_PAST_EXPIRATION", Medium},
		{"CA expiring in 10 days", func(w *world) string {
			w.cas = append(w.cas, CA{Name: "trusted CA old.pem", Cert: w.ca("old CA", nil, now.Add(10*24*time.Hour)).Cert})
			return "trusted CA old.pem"
		}, CheckCACertificateExpiring, "expires on", Medium},
		{"revoked key back in an ACTIVE certificate", func(w *world) string {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			w.device([]string{"d1"}, []string{"scoped"}, auth.StatusRevoked, key, now.Add(time.Hour*24*365))
			return w.device([]string{"d1"}, []string{"scoped"}, auth.StatusActive, key, now.Add(time.Hour*24*366))
		}, CheckRevokedStillActive, "has the key of revoked certificate", Medium},
		{"revoked certificate still connected", func(w *world) string {
			id := w.device([]string{"e1"}, []string{"scoped"}, auth.StatusRevoked, nil, now.Add(time.Hour*24*365))
			w.records = append(w.records, Record{Time: now.Add(-time.Hour), EventType: "Connect", Status: "Success", ClientID: "e1", PrincipalID: id})
			return id
		}, CheckRevokedStillActive, "is REVOKED but client \"e1\" connected", Medium},
		{"RSA 1024 device key", func(w *world) string {
			return w.device([]string{"f1"}, []string{"scoped"}, auth.StatusActive, rsa1024, now.Add(time.Hour*24*365))
		}, CheckDeviceKeyQuality, "RSA key of 1024 bits", Critical},
		{"P-224 device key", func(w *world) string {
			return w.device([]string{"f2"}, []string{"scoped"}, auth.StatusActive, p224, now.Add(time.Hour*24*365))
		}, CheckDeviceKeyQuality, "smaller than P-256", Critical},
		{"RSA 1024 CA key", func(w *world) string {
			w.cas = append(w.cas, CA{Name: "trusted CA weak.pem", Cert: w.ca("weak CA", rsa1024, now.Add(5*365*24*time.Hour)).Cert})
			return "trusted CA weak.pem"
		}, CheckCAKeyQuality, "RSA key of 1024 bits", Critical},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := clean(t)
			resource := c.setup(w)
			rep := w.audit()
			if len(rep.Findings) == 0 {
				t.Fatal("no finding")
			}
			found := false
			for _, f := range rep.Findings {
				if f.Check != c.check {
					t.Errorf("unexpected %s finding: %s", f.Check, f.Reason)
					continue
				}
				if f.Severity != c.severity || f.Fix == "" {
					t.Errorf("finding %+v: severity %s, fix %q", f, f.Severity, f.Fix)
				}
				if f.Resource.ID == resource && strings.Contains(f.ReasonCode+" "+f.Reason, c.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("no %s finding on %s containing %q: %+v", c.check, resource, c.reason, rep.Findings)
			}
			if !rep.FailsAt(c.severity) || (c.severity != Critical && rep.FailsAt(Critical)) {
				t.Errorf("FailsAt wrong for worst %s", rep.Worst())
			}
		})
	}
}

func TestRecordsAndSeverities(t *testing.T) {
	log := `2026-06-01T10:00:00Z	INFO	console line, skipped
{"logLevel":"info","timestamp":"2026-06-01T10:00:00.5Z","msg":"client connected","eventType":"Connect","status":"Success","clientId":"s1","principalId":"p1"}
{"logLevel":"error","timestamp":"2026-06-01T10:01:00Z","msg":"client disconnected","eventType":"Disconnect","status":"Failure","clientId":"s1","principalId":"p1","disconnectReason":"DUPLICATE_CLIENTID","reason":"DUPLICATE_CLIENT_ID"}
{"msg":"ggbroker serving"}
not json {
`
	recs, skipped, err := ReadRecords(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || skipped != 2 || !recs[1].duplicate() || recs[0].Time.IsZero() {
		t.Fatalf("records %+v, skipped %d", recs, skipped)
	}
	for _, c := range []struct {
		in   string
		want Severity
		ok   bool
	}{{"high", High, true}, {"CRITICAL", Critical, true}, {"Low", Low, true}, {"urgent", "", false}} {
		got, err := ParseSeverity(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseSeverity(%q) = %q, %v", c.in, got, err)
		}
	}
	if _, err := Run(Input{Policies: []PolicyDoc{{Name: "broken", Raw: []byte(`{"Statement":`)}}}); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("broken policy: %v", err)
	}
}
