package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/discovery"
)

// callSigned sends a request signed for signingName with the AWS SDK's SigV4 signer and the keys of
// the credentials file (the Greengrass V2 Go SDK module is not in this build's module cache; the AWS
// CLI test calls greengrassv2 through botocore too). It returns the status, error type and JSON body.
func (h *harness) callSigned(t *testing.T, signingName, method, path string, in any) (int, string, map[string]any) {
	t.Helper()
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	req, err := http.NewRequest(method, h.apiURL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	creds, err := h.apiConfig(t).Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), signingName, h.cfg.Core.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.broker.State().CoreCA.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %s", method, path, raw)
		}
	}
	return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), out
}

// TestGreengrassClientDevicesAndConnectivity: acceptance cases 27 and 28 on the wire.
func TestGreengrassClientDevicesAndConnectivity(t *testing.T) {
	h := startAPIBroker(t, nil)
	if _, err := h.iotClient(t).CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String("d1")}); err != nil {
		t.Fatal(err)
	}
	core := "/greengrass/v2/coreDevices/" + h.cfg.Core.ThingName
	status, _, out := h.callSigned(t, "greengrass", "POST", core+"/associateClientDevices", map[string]any{"entries": []map[string]string{{"thingName": "d1"}, {"thingName": "ghost"}}})
	if status != 200 {
		t.Fatalf("associate: %d %v", status, out)
	}
	if errs := out["errorEntries"].([]any); len(errs) != 1 || errs[0].(map[string]any)["thingName"] != "ghost" {
		t.Fatalf("errorEntries: %v", out)
	}
	status, _, out = h.callSigned(t, "greengrass", "GET", core+"/associatedClientDevices", nil)
	list, _ := out["associatedClientDevices"].([]any)
	if status != 200 || len(list) != 1 || list[0].(map[string]any)["thingName"] != "d1" {
		t.Fatalf("list: %d %v", status, out)
	}
	if ts, isNum := list[0].(map[string]any)["associationTimestamp"].(float64); !isNum || ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("associationTimestamp: %v", list[0])
	}
	if status, typ, _ := h.callSigned(t, "greengrass", "GET", "/greengrass/v2/coreDevices/no-such-core/associatedClientDevices", nil); status != 404 || typ != "ResourceNotFoundException" {
		t.Fatalf("unknown core: %d %s", status, typ)
	}
	// Signed for iot, the greengrass routes are not reachable.
	if status, typ, _ := h.callSigned(t, "iot", "GET", core+"/associatedClientDevices", nil); status != 404 || typ != "UnknownOperationException" {
		t.Fatalf("greengrass route signed for iot: %d %s", status, typ)
	}
	status, _, _ = h.callSigned(t, "greengrass", "POST", core+"/disassociateClientDevices", map[string]any{"entries": []map[string]string{{"thingName": "d1"}}})
	if _, _, out = h.callSigned(t, "greengrass", "GET", core+"/associatedClientDevices", nil); status != 200 || len(out["associatedClientDevices"].([]any)) != 0 {
		t.Fatalf("after disassociate: %d %v", status, out)
	}

	info := []map[string]any{{"Id": "a", "HostAddress": "10.0.0.5", "PortNumber": 8883, "Metadata": ""}}
	status, _, out = h.callSigned(t, "greengrass", "PUT", "/greengrass/things/"+h.cfg.Core.ThingName+"/connectivityInfo", map[string]any{"ConnectivityInfo": info})
	if status != 200 || out["Version"] == "" {
		t.Fatalf("UpdateConnectivityInfo: %d %v", status, out)
	}
	status, _, out = h.callSigned(t, "greengrass", "GET", "/greengrass/things/"+h.cfg.Core.ThingName+"/connectivityInfo", nil)
	got, _ := json.Marshal(out["ConnectivityInfo"])
	if status != 200 || string(got) != `[{"HostAddress":"10.0.0.5","Id":"a","Metadata":"","PortNumber":8883}]` {
		t.Fatalf("GetConnectivityInfo: %d %s", status, got)
	}
	if status, typ, _ := h.callSigned(t, "greengrass", "PUT", "/greengrass/things/"+h.cfg.Core.ThingName+"/connectivityInfo",
		map[string]any{"ConnectivityInfo": []map[string]any{{"Id": "b", "PortNumber": 1}}}); status != 400 || typ != "ValidationException" {
		t.Fatalf("no HostAddress: %d %s", status, typ)
	}
}

// discoverPolicy lets a client device discover its core and connect as its thing, and nothing else.
const discoverPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"greengrass:Discover","Resource":"arn:aws:iot:*:*:thing/d*"},
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}]}`

// discoveryStatus calls discovery for thing with d's certificate and returns the status and answer.
func (h *harness) discoveryStatus(t *testing.T, d *device, thing string) (int, discovery.Response) {
	t.Helper()
	resp, body, err := discoverAt(h.discoveryClient(d), h.broker.DiscoveryAddr(), thing)
	if err != nil {
		t.Fatalf("discover %s: %v", thing, err)
	}
	var r discovery.Response
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("discover %s: %v\n%s", thing, err, body)
		}
	}
	return resp.StatusCode, r
}

// TestDiscoveryFollowsGreengrassAPI (acceptance cases 27 and 28, the discovery half): with no
// association by config, a device discovers its core once BatchAssociateClientDeviceWithCoreDevice
// associated it and no longer once it is disassociated; UpdateConnectivityInfo's list is what
// discovery answers, and the MQTT server certificate is re-issued for its host addresses.
func TestDiscoveryFollowsGreengrassAPI(t *testing.T) {
	h := startAPIBroker(t, func(c *config.Config) {
		loopbackEndpoint(c)
		c.Discovery.ClientDevices = nil // only what the API associates
	})
	h.writePolicy("discover", discoverPolicy)
	d := h.createDevice("d1", "discover")
	coreThing := h.cfg.Core.ThingName
	core := "/greengrass/v2/coreDevices/" + coreThing
	assoc := func(op string) {
		t.Helper()
		if status, _, out := h.callSigned(t, "greengrass", "POST", core+"/"+op, map[string]any{"entries": []map[string]string{{"thingName": "d1"}}}); status != 200 {
			t.Fatalf("%s: %d %v", op, status, out)
		}
	}

	if status, _ := h.discoveryStatus(t, d, "d1"); status != http.StatusNotFound {
		t.Fatalf("discover before any association: %d, want 404", status)
	}
	h.record(t, "discovery refused", map[string]string{"thingName": "d1", "reason": discovery.ReasonThingNotAssociate})

	assoc("associateClientDevices")
	status, answer := h.discoveryStatus(t, d, "d1")
	if status != http.StatusOK || len(answer.GGGroups) != 1 || answer.GGGroups[0].Cores[0].ThingARN != discovery.ThingARN(h.cfg.Core.Region, h.cfg.Core.AccountID, coreThing) {
		t.Fatalf("discover once associated: %d %+v", status, answer)
	}

	info := []map[string]any{{"Id": "a", "HostAddress": "10.0.0.5", "PortNumber": 8883, "Metadata": ""}, {"Id": "lo", "HostAddress": "127.0.0.1", "PortNumber": 0, "Metadata": "local"}}
	if status, _, out := h.callSigned(t, "greengrass", "PUT", "/greengrass/things/"+coreThing+"/connectivityInfo", map[string]any{"ConnectivityInfo": info}); status != 200 {
		t.Fatalf("UpdateConnectivityInfo: %d %v", status, out)
	}
	_, answer = h.discoveryStatus(t, d, "d1")
	got := answer.GGGroups[0].Cores[0].Connectivity
	if len(got) != 2 || got[0] != (discovery.Endpoint{ID: "a", HostAddress: "10.0.0.5", PortNumber: 8883, Metadata: ""}) ||
		got[1].HostAddress != "127.0.0.1" || !strings.HasSuffix(h.addr(), ":"+strconv.Itoa(got[1].PortNumber)) {
		t.Fatalf("discovery connectivity after UpdateConnectivityInfo: %+v (MQTT listener %s)", got, h.addr())
	}
	if err := h.broker.ServerCertificate().VerifyHostname("10.0.0.5"); err != nil {
		t.Errorf("the MQTT server certificate was not re-issued for the new host address: %v", err)
	}
	// The device connects where discovery sent it (the loopback entry), as the SDK samples do.
	if _, err := h.connectV3(d, "d1"); err != nil {
		t.Fatalf("connect after discovery: %v", err)
	}

	// Both are kept in the state directory: a restarted broker answers the same.
	h.stop()
	h = startWith(t, h.cfg)
	if status, answer := h.discoveryStatus(t, d, "d1"); status != http.StatusOK || answer.GGGroups[0].Cores[0].Connectivity[0].HostAddress != "10.0.0.5" {
		t.Fatalf("discover after a restart: %d %+v", status, answer)
	}

	assoc("disassociateClientDevices")
	if status, _ := h.discoveryStatus(t, d, "d1"); status != http.StatusNotFound {
		t.Fatalf("discover once disassociated: %d, want 404", status)
	}
	h.record(t, "discovery refused", map[string]string{"thingName": "d1", "reason": discovery.ReasonThingNotAssociate})
}
