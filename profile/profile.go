// Package profile holds the AWS behaviour rules ggbroker applies on top of MQTT (behaviour.profile:
// greengrass or iot-core, every rule overridable), as plain values and pure functions: the broker's
// hooks ask them, and they know nothing of mochi. Each rule's AWS source is in README.md's table.
package profile

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ggbroker/ggbroker/config"
)

// Profile is the set of AWS behaviour rules the broker applies on top of MQTT. Firmware developers test
// offline because they want "works here" to mean "works on AWS": a permissive broker hides the bugs that
// bite in the field. Zero means "no limit" for every number. Each rule's source is in README.md.
type Profile struct {
	Name string
	// MaxPayloadBytes caps a PUBLISH payload (both profiles: AWS IoT Core's 128 KB message size, and
	// Greengrass' Moquette caps messages at 128 KiB too). MaxPacketBytes is what MQTT 5 CONNACK
	// advertises as Maximum Packet Size and what mochi enforces on every inbound packet: the payload
	// plus room for a maximum-length topic and properties.
	MaxPayloadBytes int
	MaxPacketBytes  int
	// MaxTopicBytes and MaxTopicSlashes limit topic names and filters (AWS: 256 bytes, 7 slashes),
	// not counting a $aws/rules/<rule>/ prefix (basic ingest).
	MaxTopicBytes   int
	MaxTopicSlashes int
	// MaxClientIDBytes limits the client ID; RefuseDollarClientIDs refuses client IDs starting with $.
	MaxClientIDBytes      int
	RefuseDollarClientIDs bool
	// MaxQoS is the highest QoS the broker supports (AWS IoT Core: 1).
	MaxQoS int
	// KeepAliveMin and KeepAliveMax clamp the client's keep-alive (AWS: 30..1200 s, 0 means 1200).
	KeepAliveMin, KeepAliveMax int
	// MaxFiltersPerSubscribe and MaxSubscriptionsPerConnection (AWS: 8 and 50).
	MaxFiltersPerSubscribe        int
	MaxSubscriptionsPerConnection int
	// ReservedTopics refuses publish and subscribe on $ topics other than the $aws/ topics AWS IoT
	// supports for that operation (aws-iot-core/reserved-topics.md).
	ReservedTopics bool
	// DisconnectUnauthorized closes an MQTT 3.1.1 connection on an unauthorized publish or subscribe,
	// as AWS IoT Core does; otherwise the publish is dropped and the filter gets SUBACK 0x80.
	DisconnectUnauthorized bool
	// SessionExpirySeconds is how long an MQTT 3.1.1 persistent session lives after its client
	// disconnects (AWS: 1 hour); MaxSessionExpirySeconds clamps an MQTT 5 client's Session Expiry
	// (AWS: 7 days), returned in CONNACK.
	SessionExpirySeconds    int
	MaxSessionExpirySeconds int
	// TopicAliasMaximum is the MQTT 5 Topic Alias Maximum advertised in CONNACK: how many aliases a
	// client may set per connection (AWS IoT Core: 8). Each alias holds a topic in memory.
	TopicAliasMaximum int
	// PublishesPerSecond limits inbound publishes per connection (AWS: 100/s); the excess is dropped.
	PublishesPerSecond int
	// LifecycleEvents publishes $aws/events/presence/connected|disconnected/<clientId>.
	LifecycleEvents bool
	// SysTopics lets clients subscribe to mochi's $SYS statistics. AWS IoT has no $SYS, and they tell
	// every device how many clients the gateway has: off in both profiles unless configured.
	SysTopics bool
	// ClientIDMustBeThing is Greengrass' rule that a client device's MQTT client ID is the name of a
	// thing its certificate is attached to (greengrass-v2/device-auth.md). AWS IoT Core has no such
	// rule: a certificate need not be attached to any thing (a fleet provisioning claim certificate is
	// not) and iot:Connect alone decides which client IDs it may use; thing policy variables resolve
	// only when the client ID names a thing attached to the certificate
	// (aws-iot-core/thing-policy-variables.md).
	ClientIDMustBeThing bool
}

// Profile names.
const (
	Greengrass = "greengrass"
	IoTCore    = "iot-core"
)

const (
	kib = 1024
	// packetOverhead is the room a 128 KiB payload needs for its topic (256 bytes), properties and
	// header within the advertised Maximum Packet Size.
	packetOverhead = 2 * kib
)

// profiles are the built-in profiles. greengrass is what a Greengrass core device's local broker does:
// MQTT as the spec says, with Moquette's 128 KiB message cap. iot-core is AWS IoT Core's documented
// limits and departures from the spec.
var profiles = map[string]Profile{
	Greengrass: {
		Name:            Greengrass,
		MaxPayloadBytes: 128 * kib, MaxPacketBytes: 128*kib + packetOverhead,
		MaxQoS:              2,
		LifecycleEvents:     true,
		ClientIDMustBeThing: true,
		// Not AWS rules but bounds one device must not exceed on a gateway (issue 17): 180,000
		// subscriptions from one session took 620 MB, and a 20,000-level filter seconds of CPU per
		// matching publish. Far above what any Greengrass client device uses.
		MaxSubscriptionsPerConnection: 1000,
		MaxTopicSlashes:               127,
		TopicAliasMaximum:             64,
	},
	IoTCore: {
		Name:            IoTCore,
		MaxPayloadBytes: 128 * kib, MaxPacketBytes: 128*kib + packetOverhead,
		MaxTopicBytes: 256, MaxTopicSlashes: 7,
		MaxClientIDBytes: 128, RefuseDollarClientIDs: true,
		MaxQoS:       1,
		KeepAliveMin: 30, KeepAliveMax: 1200,
		MaxFiltersPerSubscribe: 8, MaxSubscriptionsPerConnection: 50,
		ReservedTopics:          true,
		DisconnectUnauthorized:  true,
		SessionExpirySeconds:    3600,
		MaxSessionExpirySeconds: 7 * 24 * 3600,
		PublishesPerSecond:      100,
		TopicAliasMaximum:       8,
		LifecycleEvents:         true,
	},
}

// FromConfig builds the profile behaviour.profile names, with every override applied. An
// override is written "profile" (keep the profile's value) or a value; errors name the key.
func FromConfig(b config.Behaviour) (Profile, error) {
	p, ok := profiles[b.Profile]
	if !ok {
		return Profile{}, fmt.Errorf("behaviour.profile: %q is not %s or %s", b.Profile, Greengrass, IoTCore)
	}
	ints := []struct {
		key string
		raw string
		dst *int
	}{
		{"maxPayloadBytes", b.MaxPayloadBytes, &p.MaxPayloadBytes},
		{"maxTopicBytes", b.MaxTopicBytes, &p.MaxTopicBytes},
		{"maxTopicSlashes", b.MaxTopicSlashes, &p.MaxTopicSlashes},
		{"maxClientIdBytes", b.MaxClientIDBytes, &p.MaxClientIDBytes},
		{"maxQos", b.MaxQoS, &p.MaxQoS},
		{"keepAliveMinSeconds", b.KeepAliveMinSeconds, &p.KeepAliveMin},
		{"keepAliveMaxSeconds", b.KeepAliveMaxSeconds, &p.KeepAliveMax},
		{"maxFiltersPerSubscribe", b.MaxFiltersPerSubscribe, &p.MaxFiltersPerSubscribe},
		{"maxSubscriptionsPerConnection", b.MaxSubscriptionsPerConnection, &p.MaxSubscriptionsPerConnection},
		{"sessionExpirySeconds", b.SessionExpirySeconds, &p.SessionExpirySeconds},
		{"maxSessionExpirySeconds", b.MaxSessionExpirySeconds, &p.MaxSessionExpirySeconds},
		{"publishesPerSecond", b.PublishesPerSecond, &p.PublishesPerSecond},
		{"topicAliasMaximum", b.TopicAliasMaximum, &p.TopicAliasMaximum},
	}
	for _, o := range ints {
		if isProfileDefault(o.raw) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(o.raw))
		if err != nil || n < 0 {
			return Profile{}, fmt.Errorf("behaviour.%s: %q is not \"profile\" or a whole number >= 0", o.key, o.raw)
		}
		*o.dst = n
	}
	bools := []struct {
		key string
		raw string
		dst *bool
	}{
		{"refuseDollarClientIds", b.RefuseDollarClientIDs, &p.RefuseDollarClientIDs},
		{"reservedTopics", b.ReservedTopics, &p.ReservedTopics},
		{"disconnectUnauthorized", b.DisconnectUnauthorized, &p.DisconnectUnauthorized},
		{"lifecycleEvents", b.LifecycleEvents, &p.LifecycleEvents},
		{"sysTopics", b.SysTopics, &p.SysTopics},
		{"clientIdMustBeThing", b.ClientIDMustBeThing, &p.ClientIDMustBeThing},
	}
	for _, o := range bools {
		if isProfileDefault(o.raw) {
			continue
		}
		v, err := strconv.ParseBool(strings.TrimSpace(o.raw))
		if err != nil {
			return Profile{}, fmt.Errorf("behaviour.%s: %q is not \"profile\", true or false", o.key, o.raw)
		}
		*o.dst = v
	}
	if p.TopicAliasMaximum > 65535 {
		return Profile{}, fmt.Errorf("behaviour.topicAliasMaximum: %d is more than 65535", p.TopicAliasMaximum)
	}
	if p.MaxQoS > 2 {
		return Profile{}, fmt.Errorf("behaviour.maxQos: %d is not 0, 1 or 2", p.MaxQoS)
	}
	if p.KeepAliveMax > 0 && p.KeepAliveMin > p.KeepAliveMax {
		return Profile{}, fmt.Errorf("behaviour.keepAliveMinSeconds (%d) is above keepAliveMaxSeconds (%d)", p.KeepAliveMin, p.KeepAliveMax)
	}
	if !isProfileDefault(b.MaxPayloadBytes) {
		p.MaxPacketBytes = 0
		if p.MaxPayloadBytes > 0 {
			p.MaxPacketBytes = p.MaxPayloadBytes + packetOverhead
		}
	}
	return p, nil
}

func isProfileDefault(raw string) bool {
	raw = strings.TrimSpace(raw)
	return raw == "" || strings.EqualFold(raw, "profile")
}

// KeepAlive is the keep-alive the broker applies to a client that asked for k seconds: AWS IoT Core
// turns 0 and values above 1200 into 1200, and values below 30 into 30.
func (p Profile) KeepAlive(k uint16) uint16 {
	if p.KeepAliveMax > 0 && (k == 0 || int(k) > p.KeepAliveMax) {
		return uint16(p.KeepAliveMax)
	}
	if p.KeepAliveMin > 0 && int(k) < p.KeepAliveMin {
		return uint16(p.KeepAliveMin)
	}
	return k
}

// CheckClientID returns why a client ID is refused, or "".
func (p Profile) CheckClientID(id string) string {
	if p.MaxClientIDBytes > 0 && len(id) > p.MaxClientIDBytes {
		return fmt.Sprintf("client ID is %d bytes, more than the %d allowed", len(id), p.MaxClientIDBytes)
	}
	if p.RefuseDollarClientIDs && strings.HasPrefix(id, "$") {
		return "client IDs starting with $ are reserved"
	}
	return ""
}

// basicIngestPrefix is AWS IoT's basic ingest prefix, $aws/rules/<rule>/, which does not count
// toward the topic limits.
const basicIngestPrefix = "$aws/rules/"

// sharePrefix starts a shared subscription's filter: $share/<ShareName>/<filter>.
const sharePrefix = "$share/"

// SharedFilter splits a shared subscription's filter into its share name and the filter it shares;
// ok is false for an ordinary filter.
func SharedFilter(filter string) (share, inner string, ok bool) {
	rest, ok := strings.CutPrefix(filter, sharePrefix)
	if !ok {
		return "", "", false
	}
	share, inner, _ = strings.Cut(rest, "/")
	return share, inner, true
}

// CheckTopic returns why a topic name (publish) or filter (subscribe) breaks the size limits, or "".
// A shared subscription's limits are those of the filter it shares.
func (p Profile) CheckTopic(topic string) string {
	t := topic
	if _, inner, ok := SharedFilter(t); ok {
		t = inner
	}
	if strings.HasPrefix(t, basicIngestPrefix) {
		if i := strings.IndexByte(t[len(basicIngestPrefix):], '/'); i >= 0 {
			t = t[len(basicIngestPrefix)+i+1:]
		}
	}
	if p.MaxTopicBytes > 0 && len(t) > p.MaxTopicBytes {
		return fmt.Sprintf("topic is %d bytes, more than the %d allowed", len(t), p.MaxTopicBytes)
	}
	if p.MaxTopicSlashes > 0 && strings.Count(t, "/") > p.MaxTopicSlashes {
		return fmt.Sprintf("topic has %d levels, more than the %d allowed", strings.Count(t, "/")+1, p.MaxTopicSlashes+1)
	}
	return ""
}

// reservedPublish and reservedSubscribe are the $aws/ topic prefixes a device may publish or subscribe
// to on AWS IoT Core (aws-iot-core/reserved-topics.md): shadows, jobs, Device Defender, tunnels, fleet
// provisioning, basic ingest (publish only), and events and SiteWise (subscribe only).
var (
	reservedBoth      = []string{"$aws/things/", "$aws/certificates/create", "$aws/provisioning-templates/"}
	reservedPublish   = append([]string{basicIngestPrefix}, reservedBoth...)
	reservedSubscribe = append([]string{"$aws/events/", "$aws/sitewise/"}, reservedBoth...)
)

// brokerOnly are the topics only the broker publishes to, in every profile and whatever a policy
// allows: its lifecycle events and $SYS (a device must not be able to spoof another's presence).
var brokerOnly = []string{"$aws/events/", "$SYS/"}

// CheckReserved returns why a $ topic may not be used for this operation, or "".
func (p Profile) CheckReserved(topic string, subscribe bool) string {
	if !strings.HasPrefix(topic, "$") {
		return ""
	}
	if !subscribe {
		for _, prefix := range brokerOnly {
			if strings.HasPrefix(topic, prefix) {
				return fmt.Sprintf("%s is a topic only the broker publishes to", topic)
			}
		}
	}
	if share, inner, ok := SharedFilter(topic); ok && subscribe {
		// AWS IoT Core supports shared subscriptions ($share/<ShareName>/<filter>, MQTT 3.1.1 and 5);
		// the filter they share follows the rules of any filter.
		if share == "" || strings.ContainsAny(share, "+#") {
			return fmt.Sprintf("%s: a shared subscription needs a share name without + or #", topic)
		}
		return p.CheckReserved(inner, true)
	}
	if subscribe && !p.SysTopics && (topic == "$SYS" || strings.HasPrefix(topic, "$SYS/")) {
		return fmt.Sprintf("%s: the $SYS topics are off (behaviour.sysTopics; AWS IoT has none)", topic)
	}
	if !p.ReservedTopics {
		return ""
	}
	allowed := reservedPublish
	if subscribe {
		allowed = reservedSubscribe
	}
	for _, prefix := range allowed {
		if strings.HasPrefix(topic, prefix) {
			return ""
		}
	}
	op := "publish to"
	if subscribe {
		op = "subscribe to"
	}
	return fmt.Sprintf("%s is a reserved topic that devices cannot %s", topic, op)
}

// SessionExpiry is how long a persistent session outlives its connection, in seconds: for MQTT 5 the
// client's Session Expiry Interval clamped to max (the profile's MaxSessionExpirySeconds, or mochi's
// ceiling), for MQTT 3.1.1 the profile's SessionExpirySeconds (AWS IoT Core: 1 hour), or max when the
// profile sets none.
func (p Profile) SessionExpiry(v5 bool, requested, max uint32) uint32 {
	if v5 {
		return min(requested, max)
	}
	if p.SessionExpirySeconds > 0 {
		return uint32(p.SessionExpirySeconds)
	}
	return max
}

// SessionExpired is the one expiry rule, used by the running sweep and by the restore at start alike,
// and the one mochi's own expiry loop applies: a session whose connection was lost at gone (Unix
// seconds) has expired once more than expiry seconds have passed.
func SessionExpired(gone, now int64, expiry uint32) bool {
	return now-gone > int64(expiry)
}
