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
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/iot"
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
