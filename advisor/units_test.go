package advisor

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/ggbroker/ggbroker/service"
)

func secs(xs ...float64) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x * float64(time.Second))
	}
	return out
}

// TestClassifyBackoff runs the classifier over advisor.md's sequences (acceptance case 13) and the
// edges of §5's rule.
func TestClassifyBackoff(t *testing.T) {
	cases := []struct {
		name   string
		delays []time.Duration
		want   BackoffClass
		capped bool
	}{
		{"exact doubling is strictly exponential", secs(1, 2, 4, 8, 16), BackoffExponential, false},
		{"the spec's jittered sequence", secs(0.7, 2.3, 3.1, 7.9, 13), BackoffJitter, false},
		{"constant 5 s", secs(5, 5, 5, 5, 5), BackoffConstant, false},
		{"constant with noise", secs(5, 5.1, 4.9, 5.05, 4.95, 5), BackoffConstant, false},
		{"linear steps", secs(1, 2, 3, 4, 5), BackoffLinear, false},
		{"linear steps of 2 s", secs(2, 4, 6, 8, 10, 12), BackoffLinear, false},
		{"doubling up to a cap", secs(1, 2, 4, 8, 8, 8), BackoffExponential, true},
		{"jitter up to a cap", secs(0.9, 2.4, 3.5, 8.2, 10, 9.6), BackoffJitter, true},
		{"factor 1.4 steady", secs(1, 1.4, 1.96, 2.744, 3.8416), BackoffExponential, false},
		{"random without growth", secs(3, 1, 4, 1, 5, 2), BackoffConstant, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := ClassifyBackoff(c.delays, DefaultBackoffThresholds)
			if err != nil {
				t.Fatal(err)
			}
			if a.Class != c.want || a.Capped != c.capped {
				t.Errorf("got %s (capped %t), want %s (capped %t): %s", a.Class, a.Capped, c.want, c.capped, a)
			}
		})
	}
	if _, err := ClassifyBackoff(secs(1, 2, 4, 8), DefaultBackoffThresholds); err == nil {
		t.Error("four delays classified; five are needed")
	}
}

// TestCipherVerdict is acceptance case 6 and the edges of the rule.
func TestCipherVerdict(t *testing.T) {
	cases := []struct {
		name    string
		offered []uint16
		want    Status
		reason  string
	}{
		{"RC4 only", []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}, StatusFail, "TLS_RSA_WITH_RC4_128_SHA"},
		{"ECDHE-RSA-AES128-GCM-SHA256 only", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, StatusPass, ""},
		{"recommended and an unsupported one", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_RC4_128_SHA}, StatusPassWithWarnings, "does not support: TLS_RSA_WITH_RC4_128_SHA"},
		{"supported, none recommended", []uint16{tls.TLS_RSA_WITH_AES_256_GCM_SHA384}, StatusPassWithWarnings, "neither recommended"},
		{"GREASE and SCSV are not suites", []uint16{0x0a0a, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0x00ff, 0xfafa}, StatusPass, ""},
		{"TLS 1.3 suites with a recommended one", []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, StatusPass, ""},
	}
	for _, c := range cases {
		st, reason := CipherVerdict(c.offered)
		if st != c.want || !strings.Contains(reason, c.reason) {
			t.Errorf("%s: %s %q, want %s containing %q", c.name, st, reason, c.want, c.reason)
		}
	}
}

// TestJUnitReport is acceptance case 23: PASS, WARN, FAIL and ERROR give tests=4 failures=1 errors=1
// with one <failure> and one <error>, and the suite FAILs. The XML is parsed back.
func TestJUnitReport(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rep := &Report{Suite: "qualification", StartTime: t0, EndTime: t0.Add(10 * time.Second), Results: []Result{
		{Group: "TLS", Name: "TLS_Connect", TestID: "TLS_Connect", Status: StatusPass, StartTime: t0, EndTime: t0.Add(time.Second)},
		{Group: "TLS", Name: "TLS_Expired_Server_Cert", TestID: "TLS_Expired_Server_Cert", Status: StatusPassWithWarnings, Warnings: "closed without alert", StartTime: t0, EndTime: t0.Add(2 * time.Second)},
		{Group: "MQTT", Name: "MQTT_Publish", TestID: "MQTT_Publish", Status: StatusFail, Failure: "published QoS 1", StartTime: t0, EndTime: t0.Add(3 * time.Second)},
		{Group: "Shadow", Name: "Shadow_Update_Reported_State", TestID: "Shadow_Update_Reported_State", Status: StatusError, Failure: "service not available", StartTime: t0, EndTime: t0},
	}}
	rep.finish(false)
	if rep.Status != StatusFail || rep.Passed() {
		t.Errorf("suite status %s, passed %t; want FAIL, false", rep.Status, rep.Passed())
	}
	var buf bytes.Buffer
	if err := rep.WriteJUnit(&buf); err != nil {
		t.Fatal(err)
	}
	var doc JUnitSuites
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("JUnit does not parse back: %v\n%s", err, buf.String())
	}
	if doc.Name != "qualification results" || doc.Tests != 4 || doc.Failures != 1 || doc.Errors != 1 || doc.Skipped != 0 {
		t.Errorf("testsuites name=%q tests=%d failures=%d errors=%d skipped=%d", doc.Name, doc.Tests, doc.Failures, doc.Errors, doc.Skipped)
	}
	if len(doc.Suites) != 3 || doc.Suites[0].Name != "TLS" || doc.Suites[0].Tests != 2 || doc.Suites[0].Time != "3.000" {
		t.Errorf("testsuite elements: %+v", doc.Suites)
	}
	var failures, errs int
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			if c.Failure != nil {
				failures++
				if c.Failure.Message != "published QoS 1" || c.Name != "MQTT_Publish" {
					t.Errorf("failure: %+v", c)
				}
			}
			if c.Error != nil {
				errs++
			}
			if c.Name == "TLS_Expired_Server_Cert" && !strings.Contains(c.SystemOut, "closed without alert") {
				t.Errorf("warnings not in system-out: %q", c.SystemOut)
			}
		}
	}
	if failures != 1 || errs != 1 {
		t.Errorf("%d <failure> and %d <error>, want 1 and 1", failures, errs)
	}
	// The JSON is GetSuiteRun's shape and reads back.
	buf.Reset()
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"testResult": {`) || !strings.Contains(buf.String(), `"groupName": "MQTT"`) {
		t.Errorf("JSON shape:\n%s", buf.String())
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || len(back.Results) != 4 || back.Results[2].Group != "MQTT" || back.Results[2].Failure != "published QoS 1" || back.Status != StatusFail {
		t.Errorf("JSON read back: %v %+v", err, back)
	}
}

// TestParseSuiteDefinition reads Device Advisor's suite JSON in both forms and refuses what Device
// Advisor refuses (acceptance cases 12 and 14).
func TestParseSuiteDefinition(t *testing.T) {
	rootGroup := func(caseCfg string, id string) string {
		return `{"configuration":{"EXECUTION_TIMEOUT":"120"},"tests":[{"name":"G1","configuration":{},"tests":[
			{"name":"my case","configuration":` + caseCfg + `,"test":{"id":"` + id + `","version":"0.0.0"}}]}]}`
	}
	ok := []struct{ name, doc string }{
		{"bare rootGroup", rootGroup(`{"PAYLOAD_SIZE":"100"}`, "MQTT_Client_Puback_QoS1")},
		{"SuiteDefinitionConfiguration with rootGroup as a string", `{"suiteDefinitionName":"mine","devices":[],"intendedForQualification":false,"rootGroup":` +
			jsonString(rootGroup(`{"RECONNECTION_ATTEMPTS":5}`, "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect")) + `}`},
		{"older spelling of the PUBACK test", rootGroup(`{}`, "MQTT_Client_Puback_Qos1")},
	}
	for _, c := range ok {
		s, err := ParseSuiteDefinition("file", []byte(c.doc))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if len(s.Groups) != 1 || s.Groups[0].Name != "G1" || s.Groups[0].Cases[0].Name != "my case" {
			t.Errorf("%s: parsed %+v", c.name, s)
		}
	}
	if s, _ := ParseSuiteDefinition("file", []byte(ok[1].doc)); s.Name != "mine" {
		t.Errorf("suite name %q, want suiteDefinitionName", s.Name)
	}
	bad := []struct{ name, doc, reason string }{
		{"PAYLOAD_SIZE 129", rootGroup(`{"PAYLOAD_SIZE":"129"}`, "MQTT_Client_Puback_QoS1"), "PAYLOAD_SIZE: 129 KB is outside 0 to 128"},
		{"RECONNECTION_ATTEMPTS 4", rootGroup(`{"RECONNECTION_ATTEMPTS":"4"}`, "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect"), "RECONNECTION_ATTEMPTS: 4 is outside 5 to 10"},
		{"unknown test", rootGroup(`{}`, "MQTT_Publish_Retained_Messages"), `unknown test "MQTT_Publish_Retained_Messages"`},
		{"persistent session without TRIGGER_TOPIC", rootGroup(`{}`, "MQTT_Persistent_Session_Happy_Case"), "TRIGGER_TOPIC is required"},
		{"bad timeout", rootGroup(`{"EXECUTION_TIMEOUT":"soon"}`, "MQTT_Connect"), `EXECUTION_TIMEOUT: "soon" is not a number`},
		{"desired state empty", rootGroup(`{"DESIRED_STATE":{}}`, "Shadow_Update_Reported_State"), "DESIRED_STATE is required"},
		{"no groups", `{"configuration":{},"tests":[]}`, "no group"},
		{"not JSON", `{`, "invalid JSON"},
	}
	for _, c := range bad {
		if _, err := ParseSuiteDefinition("file", []byte(c.doc)); err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.reason)
		}
	}
	q := QualificationSuite()
	var ids []string
	for _, g := range q.Groups {
		for _, c := range g.Cases {
			ids = append(ids, c.TestID)
		}
	}
	if strings.Join(ids, ",") != strings.Join(QualificationTests, ",") || len(ids) != 11 {
		t.Errorf("qualification suite: %v", ids)
	}
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestCodecMQTT311 checks the rewriting that lets paho.golang's MQTT 5 codec serve an MQTT 3.1.1
// device, with bytes written as MQTT 3.1.1 specifies them.
func TestCodecMQTT311(t *testing.T) {
	var in bytes.Buffer
	// CONNECT: "MQTT", level 4, flags clean+will(QoS 0), keep alive 30, client "c1", will topic "w", will message "x".
	in.Write([]byte{0x10, 20, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 30, 0, 2, 'c', '1', 0, 1, 'w', 0, 1, 'x'})
	in.Write([]byte{0x32, 8, 0, 3, 'a', '/', 'b', 0, 7, 'z'}) // PUBLISH QoS 1 id 7 "z" on a/b
	in.Write([]byte{0x82, 8, 0, 9, 0, 3, 'a', '/', '#', 1})   // SUBSCRIBE id 9 a/# QoS 1
	in.Write([]byte{0xc0, 0})                                 // PINGREQ
	in.Write([]byte{0xe0, 0})                                 // DISCONNECT
	var out bytes.Buffer
	c := &codec{r: bufioReader(&in), w: &out}
	cp, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	conn := cp.Content.(*packets.Connect)
	if c.version != mqtt311 || conn.ClientID != "c1" || conn.KeepAlive != 30 || !conn.CleanStart || conn.WillTopic != "w" || string(conn.WillMessage) != "x" {
		t.Fatalf("CONNECT: %+v", conn)
	}
	cp, err = c.read()
	if err != nil {
		t.Fatal(err)
	}
	if p := cp.Content.(*packets.Publish); p.Topic != "a/b" || p.PacketID != 7 || p.QoS != 1 || string(p.Payload) != "z" {
		t.Fatalf("PUBLISH: %+v", p)
	}
	cp, err = c.read()
	if err != nil {
		t.Fatal(err)
	}
	if s := cp.Content.(*packets.Subscribe); s.PacketID != 9 || len(s.Subscriptions) != 1 || s.Subscriptions[0].Topic != "a/#" || s.Subscriptions[0].QoS != 1 {
		t.Fatalf("SUBSCRIBE: %+v", s)
	}
	for _, typ := range []byte{packets.PINGREQ, packets.DISCONNECT} {
		if cp, err = c.read(); err != nil || cp.Type != typ {
			t.Fatalf("read %v %v, want type %d", cp, err, typ)
		}
	}
	s := &session{codec: c}
	connack := packets.NewControlPacket(packets.CONNACK)
	connack.Content.(*packets.Connack).SessionPresent = true
	_ = c.write(connack)
	_ = s.puback(7)
	_ = s.suback(&packets.Subscribe{PacketID: 9, Subscriptions: []packets.SubOptions{{Topic: "a/#", QoS: 2}}})
	pub := packets.NewControlPacket(packets.PUBLISH)
	p := pub.Content.(*packets.Publish)
	p.Topic, p.QoS, p.PacketID, p.Payload = "a/b", 1, 3, []byte("hi")
	_ = c.write(pub)
	_ = s.answer(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.UNSUBSCRIBE}, Content: &packets.Unsubscribe{PacketID: 5, Topics: []string{"a/#"}}}, blockSet{})
	want := []byte{0x20, 2, 1, 0, 0x40, 2, 0, 7, 0x90, 3, 0, 9, 1, 0x32, 9, 0, 3, 'a', '/', 'b', 0, 3, 'h', 'i', 0xb0, 2, 0, 5}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("written\n% x\nwant\n% x", out.Bytes(), want)
	}
}

// TestAdversarialCertificates checks what each certificate is: the large chain is at least 20%
// larger than the normal one, and the others fail verification for the reason their case is about.
func TestAdversarialCertificates(t *testing.T) {
	f := newFixture(t, scopedPolicy)
	now := time.Now()
	sc, err := newServerCerts(f.core, []string{"localhost"}, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if n, l := chainSize(sc.normal), chainSize(sc.large); float64(l) < 1.2*float64(n) {
		t.Errorf("large chain %d bytes, normal %d: not 20%% larger", l, n)
	}
	verify := func(c *tls.Certificate) error {
		_, err := c.Leaf.Verify(x509VerifyOptions(f, "localhost", now))
		return err
	}
	for name, c := range map[string]*tls.Certificate{"normal": sc.normal, "large": sc.large} {
		if err := verify(c); err != nil {
			t.Errorf("%s certificate does not verify: %v", name, err)
		}
	}
	for name, c := range map[string]*tls.Certificate{"unknown CA": sc.unknownCA, "wrong name": sc.wrongName, "expired": sc.expired} {
		if err := verify(c); err == nil {
			t.Errorf("%s certificate verifies", name)
		}
	}
	if sc.wrongName.Leaf.DNSNames[0] != WrongServerName || !sc.expired.Leaf.NotAfter.Before(now) {
		t.Errorf("wrong-name %v, expired until %v", sc.wrongName.Leaf.DNSNames, sc.expired.Leaf.NotAfter)
	}
}

func TestEndpointNames(t *testing.T) {
	names, ips := endpointNames([]string{"localhost", "10.1.2.3"}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8884})
	if len(names) != 1 || names[0] != "localhost" || len(ips) != 2 || !ips[0].Equal(net.ParseIP("10.1.2.3")) || !ips[1].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("names %v, ips %v", names, ips)
	}
	_, ips = endpointNames(nil, &net.TCPAddr{IP: net.IPv4zero, Port: 8884})
	if len(ips) < 2 || !ips[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("all-addresses listener: ips %v", ips)
	}
}

// TestHostedMatching: the hosted cases deliver a service's message by MQTT filter matching (with
// [MQTT-4.7.2-1]: a first-level wildcard does not match $aws/...), and judge a synced shadow by
// DESIRED_STATE being held in the reported state, nested objects attribute by attribute.
func TestHostedMatching(t *testing.T) {
	filters := []struct {
		filter, topic string
		want          bool
	}{
		{"$aws/things/dut/shadow/update/delta", "$aws/things/dut/shadow/update/delta", true},
		{"$aws/things/dut/shadow/#", "$aws/things/dut/shadow/update/delta", true},
		{"$aws/things/+/jobs/notify-next", "$aws/things/dut/jobs/notify-next", true},
		{"#", "$aws/things/dut/jobs/notify-next", false},
		{"+/things/dut/jobs/notify-next", "$aws/things/dut/jobs/notify-next", false},
		{"$aws/things/dut/jobs/notify", "$aws/things/dut/jobs/notify-next", false},
		{"a/#", "a", true},
		{"a/+", "a", false},
	}
	for _, c := range filters {
		if got := service.TopicMatches(c.filter, c.topic); got != c.want {
			t.Errorf("service.TopicMatches(%q, %q) = %v", c.filter, c.topic, got)
		}
	}
	desired := map[string]any{"led": "on", "cfg": map[string]any{"rate": 5.0}}
	states := []struct {
		reported map[string]any
		want     bool
	}{
		{map[string]any{"led": "on", "cfg": map[string]any{"rate": 5.0, "unit": "s"}, "fw": "1.0"}, true},
		{map[string]any{"led": "off", "cfg": map[string]any{"rate": 5.0}}, false},
		{map[string]any{"led": "on", "cfg": map[string]any{"rate": 6.0}}, false},
		{map[string]any{"led": "on"}, false},
		{nil, false},
	}
	for _, s := range states {
		if got := holds(s.reported, desired); got != s.want {
			t.Errorf("holds(%v) = %v", s.reported, got)
		}
	}
}
