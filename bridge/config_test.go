package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/service"
)

// loadFile loads a config file with the bridge's section and checks the bridge settings.
func loadFile(t *testing.T, body string) (*settings, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ggbroker.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p, nil, Section)
	if err != nil {
		return nil, err
	}
	return loadSettings(c)
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name, file string
		wantErr    []string // substrings of the error
		check      func(t *testing.T, s *settings)
	}{
		{name: "defaults", check: func(t *testing.T, s *settings) {
			if len(s.Routes) != 0 || s.Upstream != nil || s.Spool.MaxMessages != 100000 || s.Spool.MaxBytes != 64<<20 ||
				s.MinBackoff.Seconds() != 1 || s.MaxBackoff.Minutes() != 2 {
				t.Fatalf("defaults: %+v", s)
			}
		}},
		{
			name: "Greengrass configuration pasted verbatim, with case kept in names",
			file: `bridge:
  mqttTopicMapping:
    ClientDeviceHelloWorld: {topic: "clients/+/hello/world", source: LocalMqtt, target: IotCore}
    ClientDeviceCloudStatusUpdate:
      topic: "clients/+/status"
      targetTopicPrefix: "$aws/rules/StatusUpdateRule/"
      source: LocalMqtt
      target: IotCore
  mqtt5RouteOptions:
    ClientDeviceHelloWorld: {noLocal: true, retainAsPublished: true}
  brokerUri: "ssl://localhost:8883"
  mqtt: {version: mqtt5, ackTimeoutSeconds: 60, receiveMaximum: 100, sessionExpiryInterval: 4294967295}
`,
			check: func(t *testing.T, s *settings) {
				if len(s.Routes) != 2 {
					t.Fatalf("routes %+v", s.Routes)
				}
				r := s.Routes[0]
				if r.Name != "ClientDeviceCloudStatusUpdate" || r.target("clients/d1/status") != "$aws/rules/StatusUpdateRule/clients/d1/status" {
					t.Fatalf("route 0 %+v", r)
				}
				if r := s.Routes[1]; r.Name != "ClientDeviceHelloWorld" || !r.Options.RetainAsPublished || !r.Options.NoLocal {
					t.Fatalf("route options not looked up by name: %+v", r)
				}
				if len(s.Warnings) == 0 || !strings.Contains(strings.Join(s.Warnings, " "), "brokerUri") {
					t.Fatalf("ignored Greengrass keys not warned about: %v", s.Warnings)
				}
			},
		},
		{name: "Pubsub refused", file: "bridge:\n  mqttTopicMapping:\n    a: {topic: x, source: LocalMqtt, target: Pubsub}\n",
			wantErr: []string{"bridge.mqttTopicMapping.a.target", "no Greengrass IPC"}},
		{name: "unknown source", file: "bridge:\n  mqttTopicMapping:\n    a: {topic: x, source: Cloud, target: IotCore}\n",
			wantErr: []string{"bridge.mqttTopicMapping.a.source", `"Cloud" is not LocalMqtt or IotCore`}},
		{name: "no topic", file: "bridge:\n  mqttTopicMapping:\n    a: {source: LocalMqtt, target: IotCore}\n",
			wantErr: []string{"bridge.mqttTopicMapping.a.topic", "missing"}},
		{name: "bad filter", file: "bridge:\n  mqttTopicMapping:\n    a: {topic: \"a/#/b\", source: LocalMqtt, target: IotCore}\n",
			wantErr: []string{"bridge.mqttTopicMapping.a.topic", "# must be the last level"}},
		{name: "unknown key in a mapping", file: "bridge:\n  mqttTopicMapping:\n    a: {topic: x, source: LocalMqtt, target: IotCore, prefix: y}\n",
			wantErr: []string{"bridge", "prefix"}},
		{name: "Greengrass reconnect delays (case 12)", file: "bridge:\n  mqtt: {maxReconnectDelayMs: 500, minReconnectDelayMs: 1000}\n",
			wantErr: []string{"bridge.mqtt.maxReconnectDelayMs", "minReconnectDelayMs"}},
		{name: "Greengrass keep alive (case 13)", file: "bridge:\n  mqtt: {keepAliveTimeoutSeconds: 10, pingTimeoutMs: 10000}\n",
			wantErr: []string{"keepAliveTimeoutSeconds must be greater than pingTimeoutMs"}},
		{name: "keep alive 0 accepted (case 13)", file: "bridge:\n  mqtt: {keepAliveTimeoutSeconds: 0, pingTimeoutMs: 100000}\n"},
		{name: "backoff order", file: "bridge:\n  minReconnectDelay: 5s\n  maxReconnectDelay: 1s\n", wantErr: []string{"bridge.maxReconnectDelay"}},
		{name: "spool limits", file: "bridge:\n  spool: {maxMessages: 0, maxBytes: 10}\n", wantErr: []string{"bridge.spool.maxMessages", "bridge.spool.maxBytes"}},
		{name: "endpoint without host", file: "core:\n  iotDataEndpoint: \":8883\"\n", wantErr: []string{"core.iotDataEndpoint", "no host"}},
		{name: "endpoint with a scheme", file: "core:\n  iotDataEndpoint: \"ssl://x:8883\"\n", wantErr: []string{"core.iotDataEndpoint", "without a scheme"}},
		{name: "endpoint without files", file: "core:\n  iotDataEndpoint: example.com\n",
			wantErr: []string{"core.certificateFilePath: must name a file", "core.privateKeyPath", "core.rootCaPath"}},
		{name: "unreadable certificate", file: "core:\n  iotDataEndpoint: example.com\n  certificateFilePath: /nonexistent/cert.pem\n  privateKeyPath: /nonexistent/key\n  rootCaPath: /nonexistent/ca\n",
			wantErr: []string{"core.certificateFilePath", "no such file"}},
		{name: "no upstream: IotCore mappings inactive", file: "bridge:\n  mqttTopicMapping:\n    Up: {topic: x, source: LocalMqtt, target: IotCore}\n",
			check: func(t *testing.T, s *settings) {
				if s.Upstream != nil || !strings.Contains(strings.Join(s.Warnings, " "), "bridge.mqttTopicMapping.Up: core.iotDataEndpoint is empty") {
					t.Fatalf("warnings %v", s.Warnings)
				}
			}},
		{name: "names differing only in case", file: "bridge:\n  mqttTopicMapping:\n    A: {topic: x, source: LocalMqtt, target: IotCore}\n    a: {topic: y, source: LocalMqtt, target: IotCore}\n",
			wantErr: []string{"differ only in case"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := loadFile(t, tc.file)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestEndpointPort(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := writeIdentity(t, dir)
	for _, tc := range []struct{ endpoint, want string }{
		{"abc-ats.iot.us-east-1.amazonaws.com", "abc-ats.iot.us-east-1.amazonaws.com:8883"},
		{"localhost:1884", "localhost:1884"},
		{"[::1]:8884", "[::1]:8884"},
		{"::1", "[::1]:8883"},
		{"abc-ats.iot.us-east-1.amazonaws.com:443", "abc-ats.iot.us-east-1.amazonaws.com:443"},
	} {
		up, err := checkUpstream(config.Core{IoTDataEndpoint: tc.endpoint, ThingName: "core", CertificateFilePath: cert, PrivateKeyPath: key, RootCAPath: ca})
		if err != nil || up.Address != tc.want || up.ClientID != "core" {
			t.Fatalf("%s: %+v %v, want %s", tc.endpoint, up, err, tc.want)
		}
		if alpn := strings.Join(up.TLS.NextProtos, ","); (alpn == alpnMQTTOver443) != strings.HasSuffix(tc.want, ":443") {
			t.Fatalf("%s: ALPN %q", tc.endpoint, alpn)
		}
	}
}

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false}, {"a/#", "a", true}, {"a/#", "a/b/c", true},
		{"#", "a", true}, {"#", "$aws/things/x", false}, {"+/x", "$SYS/x", false}, {"$aws/things/+/shadow/#", "$aws/things/t/shadow/update", true},
		{"a", "a/b", false}, {"a/b", "a", false}, {"+/+", "a/b", true}, {"a//b", "a//b", true},
	} {
		if got := service.TopicMatches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("service.TopicMatches(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := int64(1000), int64(120000)
	for n := range 12 {
		ceil := min(lo<<n, hi)
		for range 50 {
			d := backoff(n, 1000, 120000)
			if int64(d) < lo || int64(d) > ceil {
				t.Fatalf("attempt %d: %d outside [%d, %d]", n, d, lo, ceil)
			}
		}
	}
	distinct := map[int64]bool{}
	for range 20 {
		distinct[int64(backoff(5, 1000, 120000))] = true
	}
	if len(distinct) < 2 {
		t.Fatal("no jitter")
	}
}

// TestEnvironmentOverrides: GGBROKER_BRIDGE_... overrides the bridge's keys like the broker's.
func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("GGBROKER_BRIDGE_SPOOL_MAXMESSAGES", "42")
	t.Setenv("GGBROKER_BRIDGE_MAXRECONNECTDELAY", "30s")
	s, err := loadFile(t, "bridge:\n  spool:\n    maxMessages: 7\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.Spool.MaxMessages != 42 || s.Spool.MaxBytes != 64<<20 || s.MaxBackoff.Seconds() != 30 {
		t.Fatalf("got %+v", s)
	}
}
