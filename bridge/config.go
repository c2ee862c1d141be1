package bridge

import (
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ggbroker/ggbroker/config"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Section is the bridge's config block with its documented defaults, for config.Load.
var Section = config.Section{Key: "bridge", Defaults: defaultsYAML}

// The brokers a mapping names, spelled as Greengrass spells them (BR-MAP TopicType).
const (
	LocalMqtt = "LocalMqtt"
	IotCore   = "IotCore"
	pubsub    = "Pubsub"
)

// Config is the bridge block. The first two keys are Greengrass' MQTT bridge component's, verbatim
// (greengrass-v2/mqtt-bridge-component.md); the others are ggbroker's.
type Config struct {
	MqttTopicMapping  map[string]Mapping      `mapstructure:"mqttTopicMapping"`
	Mqtt5RouteOptions map[string]RouteOptions `mapstructure:"mqtt5RouteOptions"`
	Spool             SpoolConfig             `mapstructure:"spool"`
	MinReconnectDelay time.Duration           `mapstructure:"minReconnectDelay"`
	MaxReconnectDelay time.Duration           `mapstructure:"maxReconnectDelay"`
	// UpstreamPublishesPerSecond paces messages to the upstream (0: as fast as it acknowledges).
	UpstreamPublishesPerSecond int `mapstructure:"upstreamPublishesPerSecond"`

	// Keys of Greengrass' component that configure its own client of the local broker. The bridge runs
	// inside this broker and has no such client, so they are accepted (a pasted Greengrass configuration
	// works), checked as Greengrass checks them, and otherwise ignored with a warning.
	BrokerURI       string          `mapstructure:"brokerUri"`
	BrokerServerURI string          `mapstructure:"brokerServerUri"`
	ClientID        string          `mapstructure:"clientId"`
	MQTT            *greengrassMQTT `mapstructure:"mqtt"`
}

// Mapping is one entry of mqttTopicMapping.
type Mapping struct {
	Topic             string `mapstructure:"topic"`
	Source            string `mapstructure:"source"`
	Target            string `mapstructure:"target"`
	TargetTopicPrefix string `mapstructure:"targetTopicPrefix"`
}

// RouteOptions is one entry of mqtt5RouteOptions (BR-OPT: both false by default).
type RouteOptions struct {
	NoLocal           bool `mapstructure:"noLocal"`
	RetainAsPublished bool `mapstructure:"retainAsPublished"`
}

// SpoolConfig bounds the on-disk queue of messages on their way upstream.
type SpoolConfig struct {
	MaxMessages int   `mapstructure:"maxMessages"`
	MaxBytes    int64 `mapstructure:"maxBytes"`
}

// greengrassMQTT is the component's mqtt block (BR-CFG), for its local client.
type greengrassMQTT struct {
	Version                 string `mapstructure:"version"`
	AckTimeoutSeconds       *int64 `mapstructure:"ackTimeoutSeconds"`
	ConnAckTimeoutMs        *int64 `mapstructure:"connAckTimeoutMs"`
	PingTimeoutMs           *int64 `mapstructure:"pingTimeoutMs"`
	KeepAliveTimeoutSeconds *int64 `mapstructure:"keepAliveTimeoutSeconds"`
	MaxReconnectDelayMs     *int64 `mapstructure:"maxReconnectDelayMs"`
	MinReconnectDelayMs     *int64 `mapstructure:"minReconnectDelayMs"`
	ReceiveMaximum          *int64 `mapstructure:"receiveMaximum"`
	MaximumPacketSize       *int64 `mapstructure:"maximumPacketSize"`
	SessionExpiryInterval   *int64 `mapstructure:"sessionExpiryInterval"`
}

// route is a validated mapping, with its route options looked up by the mapping's name (Greengrass
// looks them up by the resolved target topic, so they only work for literal topics without a prefix:
// services/bridge.md §2 "Quirk"; the issue asks for the name).
type route struct {
	Name string // as written in the config file, when it could be read
	Mapping
	Options RouteOptions
}

// target is the topic a message on topic goes to.
func (r route) target(topic string) string { return r.TargetTopicPrefix + topic }

// settings is everything the bridge runs by, checked.
type settings struct {
	Routes     []route
	Spool      SpoolConfig
	MinBackoff time.Duration
	MaxBackoff time.Duration
	Rate       int             // upstream publishes per second, 0: unpaced
	Upstream   *upstreamConfig // nil: no upstream
	Warnings   []string
}

// upstreamConfig is the core device's connection to AWS IoT Core or another broker.
type upstreamConfig struct {
	Address  string // host:port
	Host     string
	ClientID string
	TLS      *tls.Config
}

// loadSettings decodes and checks the bridge block and the core.* keys. Errors name the key.
func loadSettings(c *config.Config) (*settings, error) {
	var cfg Config
	if err := c.Decode(Section.Key, &cfg); err != nil {
		return nil, err
	}
	names, err := mappingNames(c.Source)
	if err != nil {
		return nil, err
	}
	s, err := cfg.check(names)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Source, err)
	}
	s.Upstream, err = checkUpstream(c.Core)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Source, err)
	}
	if s.Upstream == nil {
		for _, r := range s.Routes {
			if r.Source == IotCore || r.Target == IotCore {
				s.Warnings = append(s.Warnings, fmt.Sprintf(
					"bridge.mqttTopicMapping.%s: core.iotDataEndpoint is empty, so there is no upstream and this mapping is inactive", r.Name))
			}
		}
	}
	return s, nil
}

// check validates the block. names maps each lower-cased mapping name (viper folds map keys) to its
// spelling in the config file, for messages and logs; a name missing from it is shown lower-cased.
func (cfg *Config) check(names map[string]string) (*settings, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("bridge.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	s := &settings{Spool: cfg.Spool, MinBackoff: cfg.MinReconnectDelay, MaxBackoff: cfg.MaxReconnectDelay, Rate: cfg.UpstreamPublishesPerSecond}
	display := func(name string) string {
		if n, ok := names[strings.ToLower(name)]; ok {
			return n
		}
		return name
	}
	keys := make([]string, 0, len(cfg.MqttTopicMapping))
	for k := range cfg.MqttTopicMapping {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m := cfg.MqttTopicMapping[k]
		name := display(k)
		key := "mqttTopicMapping." + name
		ok := true
		if m.Topic == "" {
			bad(key+".topic", "missing: every mapping needs the topic or topic filter to bridge")
			ok = false
		} else if err := checkFilter(m.Topic); err != nil {
			bad(key+".topic", "%q: %v", m.Topic, err)
			ok = false
		}
		for _, side := range []struct{ key, value string }{{"source", m.Source}, {"target", m.Target}} {
			switch side.value {
			case LocalMqtt, IotCore:
			case pubsub:
				bad(key+"."+side.key, "Pubsub is Greengrass' local publish/subscribe (IPC) for components; ggbroker has no Greengrass IPC, so only LocalMqtt and IotCore exist here")
				ok = false
			case "":
				bad(key+"."+side.key, "missing: LocalMqtt or IotCore")
				ok = false
			default:
				bad(key+"."+side.key, "%q is not LocalMqtt or IotCore", side.value)
				ok = false
			}
		}
		if ok && m.Source == IotCore && m.Target == IotCore {
			bad(key, "source and target are both IotCore: this would send the upstream's messages back to it")
			ok = false
		}
		if strings.ContainsAny(m.TargetTopicPrefix, "+#") {
			bad(key+".targetTopicPrefix", "%q: a target topic cannot hold the wildcards + or #", m.TargetTopicPrefix)
			ok = false
		}
		if ok {
			s.Routes = append(s.Routes, route{Name: name, Mapping: m})
		}
	}
	for k, o := range cfg.Mqtt5RouteOptions {
		found := false
		for i := range s.Routes {
			if strings.EqualFold(s.Routes[i].Name, k) {
				s.Routes[i].Options = o
				found = true
			}
		}
		if _, exists := cfg.MqttTopicMapping[k]; !found && !exists {
			s.Warnings = append(s.Warnings, fmt.Sprintf("bridge.mqtt5RouteOptions.%s: no mapping of that name; ignored", display(k)))
		}
	}
	if cfg.Spool.MaxMessages < 1 {
		bad("spool.maxMessages", "must be at least 1, got %d", cfg.Spool.MaxMessages)
	}
	if cfg.Spool.MaxBytes < 1024 {
		bad("spool.maxBytes", "must be at least 1024, got %d", cfg.Spool.MaxBytes)
	}
	if cfg.MinReconnectDelay <= 0 {
		bad("minReconnectDelay", "must be positive, got %s", cfg.MinReconnectDelay)
	}
	if cfg.MaxReconnectDelay < cfg.MinReconnectDelay {
		bad("maxReconnectDelay", "%s is less than minReconnectDelay %s", cfg.MaxReconnectDelay, cfg.MinReconnectDelay)
	}
	if cfg.UpstreamPublishesPerSecond < 0 {
		bad("upstreamPublishesPerSecond", "must be 0 (unpaced) or more, got %d", cfg.UpstreamPublishesPerSecond)
	}
	s.Warnings = append(s.Warnings, cfg.checkGreengrassClient(bad)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// checkGreengrassClient applies Greengrass' hard checks on its local-client keys (BR-CFG, acceptance
// cases 12 and 13 of services/bridge.md), so that a configuration Greengrass refuses is refused here
// too, and says that the keys have no effect.
func (cfg *Config) checkGreengrassClient(bad func(key, format string, args ...any)) []string {
	var ignored []string
	if cfg.BrokerURI != "" {
		ignored = append(ignored, "brokerUri")
	}
	if cfg.BrokerServerURI != "" {
		ignored = append(ignored, "brokerServerUri")
	}
	if cfg.ClientID != "" {
		ignored = append(ignored, "clientId")
	}
	if m := cfg.MQTT; m != nil {
		ignored = append(ignored, "mqtt")
		// Greengrass replaces negative values by its defaults before these checks.
		get := func(p *int64, def int64) int64 {
			if p == nil || *p < 0 {
				return def
			}
			return *p
		}
		minDelay, maxDelay := get(m.MinReconnectDelayMs, 1000), get(m.MaxReconnectDelayMs, 30000)
		if maxDelay < minDelay {
			bad("mqtt.maxReconnectDelayMs", "%d is less than mqtt.minReconnectDelayMs %d", maxDelay, minDelay)
		}
		keepAlive, ping := get(m.KeepAliveTimeoutSeconds, 60), get(m.PingTimeoutMs, 30000)
		if keepAlive != 0 && keepAlive*1000 <= ping {
			bad("mqtt.keepAliveTimeoutSeconds", "keepAliveTimeoutSeconds must be greater than pingTimeoutMs (%d s, %d ms)", keepAlive, ping)
		}
	}
	if len(ignored) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("bridge: %s configure Greengrass' own client of the local broker; this bridge runs inside the broker, so they are ignored",
		strings.Join(ignored, ", "))}
}

// checkFilter checks an MQTT topic filter: non-empty levels rules for + and # (MQTT 5 §4.7.1).
func checkFilter(f string) error {
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("# must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return errors.New("+ and # must stand alone in their level")
		}
	}
	return nil
}

// alpnMQTTOver443 is the ALPN protocol of MQTT with X.509 client certificates on AWS IoT Core's port 443.
const alpnMQTTOver443 = "x-amzn-mqtt-ca"

// defaultPort is MQTT over TLS, what AWS IoT Core's data endpoint serves.
const defaultPort = "8883"

// checkUpstream turns the core.* keys into the upstream connection's settings: nil when
// core.iotDataEndpoint is empty. The files are read now, so a missing or unreadable one stops serve.
func checkUpstream(core config.Core) (*upstreamConfig, error) {
	ep := strings.TrimSpace(core.IoTDataEndpoint)
	if ep == "" {
		return nil, nil
	}
	if strings.Contains(ep, "://") {
		return nil, fmt.Errorf("core.iotDataEndpoint: %q: give host or host:port, without a scheme", ep)
	}
	host, port := ep, defaultPort
	if h, p, err := net.SplitHostPort(ep); err == nil {
		host, port = h, p
	} else if strings.Count(ep, ":") == 1 || strings.HasPrefix(ep, "[") {
		return nil, fmt.Errorf("core.iotDataEndpoint: %q is not host or host:port: %v", ep, err)
	}
	if host == "" {
		return nil, fmt.Errorf("core.iotDataEndpoint: %q has no host", ep)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("core.iotDataEndpoint: %q: port %q is not 1..65535", ep, port)
	}
	var errs []error
	need := func(key, path string) {
		if strings.TrimSpace(path) == "" {
			errs = append(errs, fmt.Errorf("%s: must name a file when core.iotDataEndpoint is set", key))
		}
	}
	need("core.certificateFilePath", core.CertificateFilePath)
	need("core.privateKeyPath", core.PrivateKeyPath)
	need("core.rootCaPath", core.RootCAPath)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(core.CertificateFilePath)
	if err != nil {
		return nil, fmt.Errorf("core.certificateFilePath: %w", err)
	}
	keyPEM, err := os.ReadFile(core.PrivateKeyPath)
	if err != nil {
		return nil, fmt.Errorf("core.privateKeyPath: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("core.certificateFilePath %s with core.privateKeyPath %s: %w", core.CertificateFilePath, core.PrivateKeyPath, err)
	}
	caPEM, err := os.ReadFile(core.RootCAPath)
	if err != nil {
		return nil, fmt.Errorf("core.rootCaPath: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("core.rootCaPath: %s holds no PEM certificate", core.RootCAPath)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}
	if port == "443" {
		// AWS IoT Core serves MQTT with client certificates on 443 only to clients that ask for it
		// with this ALPN protocol (services/bridge.md §3, bridge_alpn); where outbound 8883 is blocked.
		tc.NextProtos = []string{alpnMQTTOver443}
	}
	return &upstreamConfig{Address: net.JoinHostPort(host, port), Host: host, ClientID: core.ThingName, TLS: tc}, nil
}

// mappingNames reads the mapping names of bridge.mqttTopicMapping from the config file with their case
// (viper lower-cases map keys), keyed by the lower-cased name. Only the spelling in logs and messages
// depends on it: names are matched case-insensitively, as viper leaves no other choice, so two names
// that differ only in case are refused. source is config.Config.Source: a path, or "embedded defaults".
func mappingNames(source string) (map[string]string, error) {
	raw, err := os.ReadFile(source)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // embedded defaults: no file, no names
		}
		return nil, fmt.Errorf("config file %s: %w", source, err)
	}
	var doc struct {
		Bridge struct {
			Mapping map[string]any `yaml:"mqttTopicMapping"`
		} `yaml:"bridge"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", source, err)
	}
	names := map[string]string{}
	for n := range doc.Bridge.Mapping {
		low := strings.ToLower(n)
		if prev, dup := names[low]; dup {
			return nil, fmt.Errorf("config file %s: bridge.mqttTopicMapping: %q and %q differ only in case; mapping names are case-insensitive", source, prev, n)
		}
		names[low] = n
	}
	return names, nil
}
