// Package config turns ggbroker's configuration sources (the embedded defaults, a YAML file, GGBROKER_*
// environment variables and command-line flags, in viper's usual precedence) into one validated Config.
//
// Errors name the source and the key, because the broker refuses to start on a bad config and the person
// reading the error has to find the line to fix.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/ggbroker/ggbroker/configs"
)

// EnvPrefix is the prefix of environment variables that override config keys: GGBROKER_MQTT_LISTEN sets
// mqtt.listen.
const EnvPrefix = "GGBROKER"

// Rotation modes: what a server certificate rotation does to connected clients.
const (
	RotationHot     = "hot"
	RotationRestart = "restart"
)

// Greengrass' client device auth component accepts serverCertificateValiditySeconds in this range and
// clamps values outside it (greengrass-v2/client-device-auth-component.md).
const (
	MinServerCertValiditySeconds = 60
	MaxServerCertValiditySeconds = 864000
)

// Config is the whole configuration of one ggbroker process. Field tags are the YAML keys.
type Config struct {
	StateDir         string           `mapstructure:"stateDir"`
	Log              Log              `mapstructure:"log"`
	MQTT             MQTT             `mapstructure:"mqtt"`
	Admin            Admin            `mapstructure:"admin"`
	Core             Core             `mapstructure:"core"`
	Authorization    Authorization    `mapstructure:"authorization"`
	Behaviour        Behaviour        `mapstructure:"behaviour"`
	ClientDeviceAuth ClientDeviceAuth `mapstructure:"clientDeviceAuth"`
	Connectivity     Connectivity     `mapstructure:"connectivity"`
	Discovery        Discovery        `mapstructure:"discovery"`
	Devices          Devices          `mapstructure:"devices"`
	Persistence      Persistence      `mapstructure:"persistence"`
	Limits           Limits           `mapstructure:"limits"`
	LocalListener    LocalListener    `mapstructure:"localListener"`
	ControlPlane     ControlPlane     `mapstructure:"controlPlane"`

	// Sections holds the top-level blocks that services own (see Section), as viper read them: a
	// service decodes its own with Decode. Keys are lower-case (viper folds them).
	Sections map[string]any `mapstructure:",remain"`

	// Source names where the config came from ("embedded defaults" or the file), for messages.
	Source string `mapstructure:"-"`
	// Warnings are problems that did not stop the load, such as a clamped value; the caller logs them.
	Warnings []string `mapstructure:"-"`
}

// Log configures the process's logger.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// MQTT configures the MQTT over mutual TLS listener.
type MQTT struct {
	Listen string `mapstructure:"listen"`
	// TLSHandshakeTimeout bounds the handshake and the CONNECT; below 100ms a TLS 1.2 RSA handshake
	// over a slow link cannot finish, so every client would fail.
	TLSHandshakeTimeout time.Duration `mapstructure:"tlsHandshakeTimeout" minDuration:"100ms"`
}

// Admin configures the loopback-only operator HTTP listener.
type Admin struct {
	Enabled bool   `mapstructure:"enabled"`
	Listen  string `mapstructure:"listen"`
}

// Core names the Greengrass core device this broker stands in for, and the account and region that
// resource ARNs are in.
type Core struct {
	ThingName string `mapstructure:"thingName"`
	Region    string `mapstructure:"region"`
	AccountID string `mapstructure:"accountId"`
	// The core device's own identity towards AWS IoT Core (or another upstream broker), named as the
	// Greengrass nucleus names them: the upstream's host or host:port (empty: no upstream), the core's
	// client certificate and private key, and the CA that verifies the upstream. The bridge service
	// validates them (bridge/config.go).
	IoTDataEndpoint     string `mapstructure:"iotDataEndpoint"`
	CertificateFilePath string `mapstructure:"certificateFilePath"`
	PrivateKeyPath      string `mapstructure:"privateKeyPath"`
	RootCAPath          string `mapstructure:"rootCaPath"`
}

// Behaviour chooses the AWS behaviour profile and overrides its rules one by one. Every override is
// the string "profile" (keep the profile's value) or a value; the broker validates them.
type Behaviour struct {
	Profile                       string `mapstructure:"profile"`
	MaxPayloadBytes               string `mapstructure:"maxPayloadBytes"`
	MaxTopicBytes                 string `mapstructure:"maxTopicBytes"`
	MaxTopicSlashes               string `mapstructure:"maxTopicSlashes"`
	MaxClientIDBytes              string `mapstructure:"maxClientIdBytes"`
	RefuseDollarClientIDs         string `mapstructure:"refuseDollarClientIds"`
	MaxQoS                        string `mapstructure:"maxQos"`
	KeepAliveMinSeconds           string `mapstructure:"keepAliveMinSeconds"`
	KeepAliveMaxSeconds           string `mapstructure:"keepAliveMaxSeconds"`
	MaxFiltersPerSubscribe        string `mapstructure:"maxFiltersPerSubscribe"`
	MaxSubscriptionsPerConnection string `mapstructure:"maxSubscriptionsPerConnection"`
	ReservedTopics                string `mapstructure:"reservedTopics"`
	DisconnectUnauthorized        string `mapstructure:"disconnectUnauthorized"`
	SessionExpirySeconds          string `mapstructure:"sessionExpirySeconds"`
	MaxSessionExpirySeconds       string `mapstructure:"maxSessionExpirySeconds"`
	PublishesPerSecond            string `mapstructure:"publishesPerSecond"`
	TopicAliasMaximum             string `mapstructure:"topicAliasMaximum"`
	LifecycleEvents               string `mapstructure:"lifecycleEvents"`
	SysTopics                     string `mapstructure:"sysTopics"`
	ClientIDMustBeThing           string `mapstructure:"clientIdMustBeThing"`
}

// Authorization modes.
const (
	AuthzAuto         = "auto"
	AuthzPolicies     = "policies"
	AuthzDeviceGroups = "deviceGroups"
	AuthzAllowAll     = "allow-all"
)

// Authorization chooses how device actions are authorized and where policies live.
type Authorization struct {
	Mode                string `mapstructure:"mode"`
	PolicyDir           string `mapstructure:"policyDir"`
	DefaultDevicePolicy string `mapstructure:"defaultDevicePolicy"`
}

// PolicyDir is the policy directory, resolved against the state directory.
func (c *Config) PolicyDir() string { return c.inStateDir(c.Authorization.PolicyDir) }

// inStateDir resolves a configured path: absolute as given, relative to the state directory otherwise.
func (c *Config) inStateDir(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.StateDir, p)
}

// ClientDeviceAuth mirrors the keys of Greengrass' client device auth component that ggbroker implements.
type ClientDeviceAuth struct {
	CertificateAuthority CertificateAuthority `mapstructure:"certificateAuthority"`
	Certificates         Certificates         `mapstructure:"certificates"`
	// DeviceGroups is the component's deviceGroups object, verbatim (formatVersion, definitions,
	// policies), or nil. It is read from the config file itself, not through viper, because viper
	// lower-cases map keys and group and policy names are case-sensitive.
	DeviceGroups any `mapstructure:"deviceGroups"`
}

// CertificateAuthority chooses the core device CA: generated (CAType) or brought by the user (the URIs).
type CertificateAuthority struct {
	CAType              StringList `mapstructure:"caType"`
	CertificateURI      string     `mapstructure:"certificateUri"`
	PrivateKeyURI       string     `mapstructure:"privateKeyUri"`
	CertificateChainURI string     `mapstructure:"certificateChainUri"`
}

// Certificates configures the broker's server certificate and its rotation.
type Certificates struct {
	ServerCertificateValiditySeconds int    `mapstructure:"serverCertificateValiditySeconds"`
	DisableCertificateRotation       bool   `mapstructure:"disableCertificateRotation"`
	RotationMode                     string `mapstructure:"rotationMode"`
}

// Connectivity lists the addresses clients use to reach the broker: the server certificates' names and
// the connectivity information discovery hands out (see config/discovery.go).
type Connectivity struct {
	HostAddresses       []string   `mapstructure:"hostAddresses"`
	DetectIPv4Addresses bool       `mapstructure:"detectIPv4Addresses"`
	Endpoints           []Endpoint `mapstructure:"endpoints"`
	IPDetector          IPDetector `mapstructure:"ipDetector"`
}

// Devices configures the device certificates ggbroker makes and trusts.
type Devices struct {
	CertificateValidityDays int      `mapstructure:"certificateValidityDays"`
	KeyType                 string   `mapstructure:"keyType"`
	TrustedCAs              []string `mapstructure:"trustedCAs"`
}

// Persistence configures where MQTT sessions, subscriptions, inflight and retained messages are kept
// across restarts (a bbolt file in the state directory).
type Persistence struct {
	Enabled bool   `mapstructure:"enabled"`
	File    string `mapstructure:"file"`
}

// PersistenceFile is the persistence file, resolved against the state directory.
func (c *Config) PersistenceFile() string { return c.inStateDir(c.Persistence.File) }

// Limits bound what clients can make the broker hold: connections, queued writes, stored messages,
// and packet sizes. (How long a disconnected session is kept is the behaviour profile's.)
type Limits struct {
	MaxConnections int64 `mapstructure:"maxConnections"`
	// MaxPendingConnections caps the connections between accept and CONNECT (see configs/ggbroker.yaml).
	MaxPendingConnections int64  `mapstructure:"maxPendingConnections"`
	MaxPendingWrites      int32  `mapstructure:"maxPendingWrites"`
	MaxInflight           uint16 `mapstructure:"maxInflight"`
	// MaxQueuedBytes bounds the payload bytes one session holds queued (see configs/ggbroker.yaml).
	MaxQueuedBytes int64  `mapstructure:"maxQueuedBytes"`
	MaxPacketSize  uint32 `mapstructure:"maxPacketSize"`
	// SlowSubscriber is what happens to a message for a client whose pending writes are full:
	// SlowSubscriberDrop, or SlowSubscriberBlock (the publisher waits up to SlowSubscriberWait).
	SlowSubscriber     string        `mapstructure:"slowSubscriber"`
	SlowSubscriberWait time.Duration `mapstructure:"slowSubscriberWait"`
	// TrimMemoryAfterConnects: after at least this many CONNECTs followed by a second without one,
	// the broker collects its garbage and returns the free memory to the operating system; 0: never.
	TrimMemoryAfterConnects int64 `mapstructure:"trimMemoryAfterConnects"`
}

// The values of limits.slowSubscriber (see configs/ggbroker.yaml for the trade-off).
const (
	SlowSubscriberDrop  = "drop"
	SlowSubscriberBlock = "block"
)

// LocalListener configures the optional plain-TCP listener for local tools, bound to loopback only.
// Every client on it gets the one Anonymous identity and its policy.
type LocalListener struct {
	Enabled   bool   `mapstructure:"enabled"`
	Listen    string `mapstructure:"listen"`
	Anonymous string `mapstructure:"anonymous"`
	Policy    string `mapstructure:"policy"`
}

// ControlPlane configures the AWS API listener: HTTPS (a certificate from the core device CA) where
// the AWS CLI and SDKs, SigV4-signed with the keys of <stateDir>/credentials or the fixed ones here,
// reach every AWS API ggbroker serves.
type ControlPlane struct {
	Enabled         bool   `mapstructure:"enabled"`
	Listen          string `mapstructure:"listen"`
	AccessKeyID     string `mapstructure:"accessKeyId"`
	SecretAccessKey string `mapstructure:"secretAccessKey"`
}

// StringList is a YAML value written either as one string or as a list of strings. Greengrass writes
// caType as ["RSA_2048"]; people write caType: RSA_2048.
type StringList []string

// First returns the first element, or "" for an empty list.
func (l StringList) First() string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

// ServerCertificateValidity is the configured validity as a duration (after clamping by Load).
func (c *Config) ServerCertificateValidity() time.Duration {
	return time.Duration(c.ClientDeviceAuth.Certificates.ServerCertificateValiditySeconds) * time.Second
}

// Section is a top-level config block that a service owns: its key ("bridge", "shadow") and its
// embedded defaults, YAML with that key at the top, so that the defaults, the file, GGBROKER_*
// environment variables and flags layer over each other for service keys exactly as for the broker's.
type Section struct {
	Key      string
	Defaults []byte
}

// Default returns the embedded default configuration, with the given services' sections.
func Default(sections ...Section) (*Config, error) {
	return Load("", nil, sections...)
}

// Load builds the configuration: embedded defaults, then the YAML file at path (if path is not empty),
// then GGBROKER_* environment variables, then the flags in fs that were set and are bound to keys with
// Bind. It refuses unknown keys and invalid values, naming the file and the key.
func Load(path string, flags map[string]*pflag.Flag, sections ...Section) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(configs.Default)); err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}
	known := map[string]bool{}
	for _, sec := range sections {
		known[strings.ToLower(sec.Key)] = true
		if len(sec.Defaults) == 0 {
			continue
		}
		if err := v.MergeConfig(bytes.NewReader(sec.Defaults)); err != nil {
			return nil, fmt.Errorf("embedded defaults of %s: %w", sec.Key, err)
		}
	}
	source := "embedded defaults"
	if path != "" {
		v.SetConfigFile(path)
		if err := v.MergeInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		source = path
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for key, f := range flags {
		if err := v.BindPFlag(key, f); err != nil {
			return nil, fmt.Errorf("bind flag --%s to %s: %w", f.Name, key, err)
		}
	}

	var c Config
	err := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			durationHook,
			stringListHook,
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("config %s (with GGBROKER_* environment and flags): %w", source, err)
	}
	c.Source = source
	var unknown []string
	for key := range c.Sections {
		if !known[key] {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config %s: unknown top-level key(s) %s", source, strings.Join(unknown, ", "))
	}
	c.ClientDeviceAuth.DeviceGroups = nil
	if path != "" {
		if c.ClientDeviceAuth.DeviceGroups, err = LoadDeviceGroups(path); err != nil {
			return nil, err
		}
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	return &c, nil
}

// Decode decodes the section a service owns into out, which holds the service's defaults for keys the
// section leaves out. Unknown keys and wrong types are refused, naming the config source and the key.
func (c *Config) Decode(key string, out any) error {
	raw, ok := c.Sections[strings.ToLower(key)]
	if !ok || raw == nil {
		return nil
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out,
		ErrorUnused:      true,
		WeaklyTypedInput: true, // environment variables and flags arrive as strings, as in viper's Unmarshal
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			stringListHook,
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return err
	}
	if err := dec.Decode(raw); err != nil {
		return fmt.Errorf("config %s: %s: %w", c.Source, key, err)
	}
	if errs := checkDurations(key, reflect.ValueOf(out)); len(errs) > 0 {
		return fmt.Errorf("config %s: %w", c.Source, errors.Join(errs...))
	}
	return nil
}

var (
	regionPattern  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	accountPattern = regexp.MustCompile(`^\d{12}$`)
)

// LoadDeviceGroups reads clientDeviceAuth.deviceGroups from a config file with its keys' case kept. It
// returns nil when the file has none. The broker calls it again when the file changes (hot reload).
func LoadDeviceGroups(path string) (any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var doc struct {
		ClientDeviceAuth struct {
			DeviceGroups any `yaml:"deviceGroups"`
		} `yaml:"clientDeviceAuth"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return doc.ClientDeviceAuth.DeviceGroups, nil
}

// stringListHook decodes a single string into a StringList.
func stringListHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(StringList{}) || from.Kind() != reflect.String {
		return data, nil
	}
	s := strings.TrimSpace(data.(string))
	if s == "" {
		return StringList{}, nil
	}
	return StringList{s}, nil
}

// validate checks values and clamps the ones Greengrass clamps, recording a warning for each.
func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.StateDir) == "" {
		bad("stateDir", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		bad("log.format", "%q is not one of auto, json, console", c.Log.Format)
	}
	if _, _, err := net.SplitHostPort(c.MQTT.Listen); err != nil {
		bad("mqtt.listen", "%q is not host:port: %v", c.MQTT.Listen, err)
	}
	errs = append(errs, checkDurations("", reflect.ValueOf(c).Elem())...)
	if c.Core.ThingName == "" {
		bad("core.thingName", "must not be empty")
	}
	if !regionPattern.MatchString(c.Core.Region) {
		bad("core.region", "%q is not an AWS region name such as us-east-1", c.Core.Region)
	}
	if !accountPattern.MatchString(c.Core.AccountID) {
		bad("core.accountId", "%q is not a 12-digit AWS account ID (quote it in YAML)", c.Core.AccountID)
	}
	switch c.Authorization.Mode {
	case AuthzAuto, AuthzPolicies, AuthzDeviceGroups, AuthzAllowAll:
	default:
		bad("authorization.mode", "%q is not one of %s, %s, %s, %s", c.Authorization.Mode, AuthzAuto, AuthzPolicies, AuthzDeviceGroups, AuthzAllowAll)
	}
	if c.Authorization.PolicyDir == "" {
		bad("authorization.policyDir", "must not be empty")
	}
	if c.Admin.Enabled {
		if err := CheckLoopback(c.Admin.Listen); err != nil {
			bad("admin.listen", "%v", err)
		}
	}

	ca := c.ClientDeviceAuth.CertificateAuthority
	if len(ca.CAType) > 1 {
		bad("clientDeviceAuth.certificateAuthority.caType", "give one key type, got %d: %v", len(ca.CAType), []string(ca.CAType))
	}
	switch strings.ToUpper(ca.CAType.First()) {
	case "", "ECDSA_P256", "RSA_2048":
	default:
		bad("clientDeviceAuth.certificateAuthority.caType", "%q is not ECDSA_P256 or RSA_2048", ca.CAType.First())
	}
	byo := []string{ca.CertificateURI, ca.PrivateKeyURI}
	if (byo[0] == "") != (byo[1] == "") {
		bad("clientDeviceAuth.certificateAuthority", "certificateUri and privateKeyUri go together: set both or neither")
	}
	if ca.CertificateChainURI != "" && ca.CertificateURI == "" {
		bad("clientDeviceAuth.certificateAuthority.certificateChainUri", "needs certificateUri and privateKeyUri")
	}

	certs := &c.ClientDeviceAuth.Certificates
	if s := certs.ServerCertificateValiditySeconds; s < MinServerCertValiditySeconds || s > MaxServerCertValiditySeconds {
		clamped := min(max(s, MinServerCertValiditySeconds), MaxServerCertValiditySeconds)
		c.Warnings = append(c.Warnings, fmt.Sprintf(
			"clientDeviceAuth.certificates.serverCertificateValiditySeconds: %d is outside %d..%d; using %d, as Greengrass does",
			s, MinServerCertValiditySeconds, MaxServerCertValiditySeconds, clamped))
		certs.ServerCertificateValiditySeconds = clamped
	}
	switch certs.RotationMode {
	case RotationHot, RotationRestart:
	default:
		bad("clientDeviceAuth.certificates.rotationMode", "%q is not %s or %s", certs.RotationMode, RotationHot, RotationRestart)
	}
	for i, h := range c.Connectivity.HostAddresses {
		if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			bad(fmt.Sprintf("connectivity.hostAddresses[%d]", i), "%q is not a host name or IP address", h)
		}
	}
	c.validateDiscovery(bad)
	if c.Devices.CertificateValidityDays < 1 {
		bad("devices.certificateValidityDays", "must be at least 1, got %d", c.Devices.CertificateValidityDays)
	}
	switch strings.ToUpper(c.Devices.KeyType) {
	case "ECDSA_P256", "RSA_2048":
	default:
		bad("devices.keyType", "%q is not ECDSA_P256 or RSA_2048", c.Devices.KeyType)
	}
	c.validateOperations(bad)
	c.validateControlPlane(bad)
	return errors.Join(errs...)
}

// validateOperations checks the persistence, limits and localListener blocks.
func (c *Config) validateOperations(bad func(key, format string, args ...any)) {
	if c.Persistence.Enabled && strings.TrimSpace(c.Persistence.File) == "" {
		bad("persistence.file", "must not be empty when persistence.enabled is true")
	}
	l := c.Limits
	if l.MaxConnections < 1 {
		bad("limits.maxConnections", "must be at least 1, got %d", l.MaxConnections)
	}
	if l.MaxPendingConnections < 1 {
		bad("limits.maxPendingConnections", "must be at least 1, got %d", l.MaxPendingConnections)
	}
	if l.MaxPendingWrites < 1 {
		bad("limits.maxPendingWrites", "must be at least 1, got %d", l.MaxPendingWrites)
	}
	switch l.SlowSubscriber {
	case SlowSubscriberDrop:
	case SlowSubscriberBlock:
		if l.SlowSubscriberWait <= 0 {
			bad("limits.slowSubscriberWait", "must be more than 0 when limits.slowSubscriber is block, got %s", l.SlowSubscriberWait)
		}
	default:
		bad("limits.slowSubscriber", "must be %s or %s, got %q", SlowSubscriberDrop, SlowSubscriberBlock, l.SlowSubscriber)
	}
	if l.MaxQueuedBytes < 0 {
		bad("limits.maxQueuedBytes", "must be 0 (no limit) or more, got %d", l.MaxQueuedBytes)
	}
	if l.MaxInflight < 1 {
		bad("limits.maxInflight", "must be 1..65535, got %d", l.MaxInflight)
	}
	if l.TrimMemoryAfterConnects < 0 {
		bad("limits.trimMemoryAfterConnects", "must be 0 (never) or more, got %d", l.TrimMemoryAfterConnects)
	}
	// 0 would be mochi's "no limit": a client could make the broker buffer a 256 MB packet.
	if l.MaxPacketSize < 1024 || l.MaxPacketSize > 268435455 {
		bad("limits.maxPacketSize", "must be 1024..268435455 bytes, got %d", l.MaxPacketSize)
	}
	if ll := c.LocalListener; ll.Enabled {
		if err := CheckLoopback(ll.Listen); err != nil {
			bad("localListener.listen", "%v: this listener has no TLS and no client authentication", err)
		}
		if strings.TrimSpace(ll.Anonymous) == "" {
			bad("localListener.anonymous", "must name the identity local clients get")
		}
		if c.Authorization.Mode != AuthzAllowAll && strings.TrimSpace(ll.Policy) == "" {
			bad("localListener.policy", "must name the policy local clients are authorized by")
		}
	}
}

// validateControlPlane checks the controlPlane block. A listen address off loopback is allowed (a test
// rig on another machine) but warned about: whoever has the keys controls the registry.
func (c *Config) validateControlPlane(bad func(key, format string, args ...any)) {
	cp := c.ControlPlane
	if (cp.AccessKeyID == "") != (cp.SecretAccessKey == "") {
		bad("controlPlane", "accessKeyId and secretAccessKey go together: set both or neither")
	}
	if cp.AccessKeyID != "" && (len(cp.AccessKeyID) < 16 || len(cp.AccessKeyID) > 128 || strings.ContainsAny(cp.AccessKeyID, " /=\t")) {
		bad("controlPlane.accessKeyId", "must be 16 to 128 characters without spaces, '/' or '=', like an AWS access key ID")
	}
	if !cp.Enabled {
		return
	}
	if _, _, err := net.SplitHostPort(cp.Listen); err != nil {
		bad("controlPlane.listen", "%q is not host:port: %v", cp.Listen, err)
	} else if err := CheckLoopback(cp.Listen); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("controlPlane.listen: %v: the AWS API listener is reachable from the network; anyone with the keys of the credentials file can change the registry", err))
	}
}

// CheckLoopback refuses a listen address whose host is not a loopback IP or "localhost": the listeners
// that use it (admin) must not be reachable from the network.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (use 127.0.0.1:PORT or [::1]:PORT)", addr)
	}
	return nil
}
