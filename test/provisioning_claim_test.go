package test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/discovery"
	"github.com/ggbroker/ggbroker/profile"
)

// claimByClientIDPolicy is a fleet provisioning claim policy as AWS' samples write it for a
// certificate that belongs to no thing: iot:Connect on a client ID pattern, not on a thing variable.
const claimByClientIDPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/claim-*"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/$aws/certificates/create/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/$aws/certificates/create/*"}]}`

// claimByThingPolicy allows iot:Connect only as the certificate's thing: a certificate attached to
// no thing never matches it.
const claimByThingPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}]}`

// thinglessCertificate makes an ACTIVE certificate through the API, attached to no thing, with the
// policy doc (created as policyName) attached: what a fleet provisioning claim certificate is.
func thinglessCertificate(t *testing.T, c *iot.Client, name, policyName, doc string) *device {
	t.Helper()
	ctx := context.Background()
	keys, err := c.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		t.Fatalf("CreateKeysAndCertificate: %v", err)
	}
	if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String(policyName), PolicyDocument: aws.String(doc)}); err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	if _, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String(policyName), Target: keys.CertificateArn}); err != nil {
		t.Fatalf("AttachPolicy: %v", err)
	}
	return deviceFromAPI(t, name, aws.ToString(keys.CertificateId), aws.ToString(keys.CertificatePem), aws.ToString(keys.KeyPair.PrivateKey))
}

// TestClaimCertificateBelongsToNoThing: in the iot-core profile a certificate attached to no thing
// connects with any client ID iot:Connect allows and runs fleet provisioning; a policy that names
// the thing variable does not match it. In the greengrass profile the client ID must be an attached
// thing, so the same certificate is refused.
func TestClaimCertificateBelongsToNoThing(t *testing.T) {
	for _, tc := range []struct {
		profile string
		// reason is the refusal reason of the claim certificate's connect, "" when it connects.
		reason string
	}{
		{profile.IoTCore, ""},
		{profile.Greengrass, "CLIENT_ID_NOT_ATTACHED_THING"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			h := startAPIBroker(t, func(c *config.Config) { c.Behaviour.Profile = tc.profile })
			api := h.iotClient(t)
			claim := thinglessCertificate(t, api, "claim", "claim-by-client-id", claimByClientIDPolicy)

			c, err := h.connectV3(claim, "claim-1")
			if tc.reason != "" {
				if err == nil {
					t.Fatal("the thing-less certificate connected")
				}
				rec := h.record(t, "connection refused", map[string]string{"clientId": "claim-1", "reason": tc.reason})
				if rec["details"] == "" {
					t.Errorf("the refusal record says nothing: %v", rec)
				}
				return
			}
			if err != nil {
				t.Fatalf("the claim certificate did not connect as claim-1: %v", err)
			}
			if rec := h.record(t, "client connected", map[string]string{"clientId": "claim-1"}); rec["thingName"] != "" {
				t.Errorf("thingName = %q, want none: the certificate belongs to no thing", rec["thingName"])
			}
			ok, created := (&fleetRig{h: h, claim: c}).request(t, "$aws/certificates/create/json", "{}")
			if !ok {
				t.Fatalf("CreateKeysAndCertificate over MQTT rejected: %v", created)
			}
			if s, _ := created["certificateOwnershipToken"].(string); s == "" {
				t.Errorf("no ownership token in %v", created)
			}

			// iot:Connect still decides: a client ID outside client/claim-* is refused.
			if _, err := h.connectV3(claim, "other-1"); err == nil {
				t.Error("connected as other-1, which the claim policy does not allow")
			}
			h.record(t, "connection refused", map[string]string{"clientId": "other-1", "reason": "AUTHORIZATION_FAILURE"})

			// Discovery answers only for a thing the certificate is attached to: a certificate of no
			// thing discovers nothing, whatever its policy allows.
			if _, err := api.CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String("d1")}); err != nil {
				t.Fatal(err)
			}
			seeker := thinglessCertificate(t, api, "seeker", "discover-any", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"greengrass:Discover","Resource":"*"}]}`)
			seeker.dir = t.TempDir()
			if err := os.WriteFile(filepath.Join(seeker.dir, auth.CoreCAFile), h.broker.State().CoreCA.CertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			if status, _ := h.discoveryStatus(t, seeker, "d1"); status != http.StatusNotFound {
				t.Errorf("a certificate of no thing discovered d1: HTTP %d", status)
			}
			h.record(t, "discovery refused", map[string]string{"thingName": "d1", "reason": discovery.ReasonThingNotAttached})

			// A policy on ${iot:Connection.Thing.ThingName} does not match a certificate of no thing.
			byThing := thinglessCertificate(t, api, "bything", "claim-by-thing", claimByThingPolicy)
			if _, err := h.connectV3(byThing, "claim-2"); err == nil {
				t.Fatal("a thing-less certificate connected with a policy on the thing variable")
			}
			rec := h.record(t, "connection refused", map[string]string{"clientId": "claim-2", "reason": "AUTHORIZATION_FAILURE"})
			if vs, _ := rec["unresolvedVariables"].([]any); !slices.Contains(vs, any("${iot:Connection.Thing.ThingName}")) {
				t.Errorf("unresolvedVariables = %v, want the thing name variable", rec["unresolvedVariables"])
			}
		})
	}
}

// TestClientIDNotTheAttachedThing: in the iot-core profile a certificate attached to a thing may
// connect with another client ID when iot:Connect allows it; the thing variables then do not resolve
// (aws-iot-core/thing-policy-variables.md), so a topic named by them is denied while a literal one is
// allowed; so for a client ID that names a thing the certificate is not attached to. With its thing's
// name as client ID the same variables resolve.
func TestClientIDNotTheAttachedThing(t *testing.T) {
	const doc = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":["arn:aws:iot:*:*:client/tool-*","arn:aws:iot:*:*:client/sensor-8","arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"]},
 {"Effect":"Allow","Action":"iot:Publish","Resource":["arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/x","arn:aws:iot:*:*:topic/tools/x"]}]}`
	h := startAPIBroker(t, func(c *config.Config) { c.Behaviour.Profile = profile.IoTCore })
	api := h.iotClient(t)
	d := provisionViaAPI(t, api, "sensor-7", "sensor-7-policy", doc)
	// sensor-8 is a thing, but not one the certificate is attached to: its name resolves nothing.
	if _, err := api.CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String("sensor-8")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		clientID, topic string
		want            byte // PUBACK reason code
	}{
		{"tool-1", "tools/x", 0},
		{"tool-1", "sensor-7/x", 0x87},
		{"sensor-8", "sensor-8/x", 0x87},
		{"sensor-7", "sensor-7/x", 0},
	} {
		_, c, err := h.connectV5(d, tc.clientID, nil)
		if err != nil {
			t.Fatalf("connect as %s: %v", tc.clientID, err)
		}
		if got := publishV5(t, c, tc.topic, 1, "x"); got != tc.want {
			t.Errorf("%s publishing to %s: PUBACK 0x%02x, want 0x%02x", tc.clientID, tc.topic, got, tc.want)
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
	if rec := h.record(t, "client connected", map[string]string{"clientId": "sensor-7"}); rec["thingName"] != "sensor-7" {
		t.Errorf("thingName = %v for the thing's own client ID", rec["thingName"])
	}
}
