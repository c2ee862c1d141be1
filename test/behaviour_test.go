package test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// allowEverything is a policy that allows every action, so a test sees the profile's rules alone.
const allowEverything = `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}`

// profileBroker starts a broker with a behaviour profile and overrides.
func profileBroker(t *testing.T, profile string, overrides func(*config.Behaviour)) *harness {
	t.Helper()
	h := startBroker(t, func(c *config.Config) {
		c.Behaviour.Profile = profile
		if overrides != nil {
			overrides(&c.Behaviour)
		}
	})
	h.writePolicy("everything", allowEverything)
	return h
}

// v5 connects an MQTT 5 client with options; disconnects (server DISCONNECT packets) go to the
// returned channel.
func (h *harness) v5(t *testing.T, d *device, connect paho.Connect, onMsg func(paho.PublishReceived)) (*paho.Connack, *paho.Client, <-chan *paho.Disconnect, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan *paho.Disconnect, 1)
	cfg := paho.ClientConfig{ClientID: connect.ClientID, Conn: packets.NewThreadSafeConn(conn),
		OnServerDisconnect: func(d *paho.Disconnect) { gone <- d }}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) { onMsg(p); return true, nil }}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if connect.KeepAlive == 0 && connect.ClientID != "" {
		connect.KeepAlive = 30
	}
	ack, err := c.Connect(ctx, &connect)
	if err != nil {
		conn.Close()
		return ack, nil, gone, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return ack, c, gone, nil
}

func TestPayloadLimitBothProfiles(t *testing.T) {
	for _, profile := range []string{"greengrass", "iot-core"} {
		t.Run(profile, func(t *testing.T) {
			h := profileBroker(t, profile, nil)
			obs, got := h.observer(t, "big/#")
			d := h.createDevice("big-1", "everything")
			ack, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ack.Properties == nil || ack.Properties.MaximumPacketSize == nil || *ack.Properties.MaximumPacketSize != 128*1024+2048 {
				t.Fatalf("CONNACK Maximum Packet Size = %v, want %d", ack.Properties, 128*1024+2048)
			}
			if rc := publishV5(t, c, "big/ok", 1, strings.Repeat("x", 128*1024)); rc != 0 {
				t.Fatalf("128 KiB payload: PUBACK %#x", rc)
			}
			expectMessage(t, got, "big/ok "+strings.Repeat("x", 128*1024))
			if rc := publishV5(t, c, "big/too", 1, strings.Repeat("x", 128*1024+1)); rc != 0x97 {
				t.Fatalf("128 KiB + 1 payload: PUBACK %#x, want 0x97", rc)
			}
			expectNoMessage(t, got, obs, "big/marker")
			h.record(t, "publish refused", map[string]string{"clientId": "big-1", "reason": "PAYLOAD_TOO_LARGE"})
		})
	}
}

func TestTopicLimits(t *testing.T) {
	long := strings.Repeat("a", 257)
	deep := "a/b/c/d/e/f/g/h/i" // 9 levels
	t.Run("iot-core", func(t *testing.T) {
		h := profileBroker(t, "iot-core", nil)
		obs, got := h.observer(t, "#")
		d := h.createDevice("topics-1", "everything")
		_, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, topic := range []string{long, deep} {
			if rc := publishV5(t, c, topic, 1, "x"); rc != 0x90 {
				t.Fatalf("publish to %.20s...: PUBACK %#x, want 0x90", topic, rc)
			}
		}
		if rc := publishV5(t, c, "a/b/c/d/e/f/g/h", 1, "8 levels"); rc != 0 {
			t.Fatalf("8-level topic: PUBACK %#x", rc)
		}
		expectMessage(t, got, "a/b/c/d/e/f/g/h 8 levels")
		// Basic ingest's $aws/rules/<rule>/ prefix does not count.
		if rc := publishV5(t, c, "$aws/rules/myRule/a/b/c/d/e/f/g/h", 1, "x"); rc != 0 {
			t.Fatalf("basic ingest topic: PUBACK %#x", rc)
		}
		if codes := subscribeV5(t, c, deep, "a/+/c"); codes[0] != 0x87 || codes[1] != 1 {
			t.Fatalf("SUBACK %v, want [0x87 1]", codes)
		}
		expectNoMessage(t, got, obs, "observer/marker")

		// MQTT 3.1.1: a topic beyond the limits closes the connection.
		lost := make(chan error, 1)
		c3 := h.mustConnectV3(h.createDevice("topics-3", "everything"), func(o *pahov3.ClientOptions) {
			o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
		})
		c3.Publish(deep, 1, false, "x")
		select {
		case <-lost:
		case <-time.After(waitFor):
			t.Fatal("MQTT 3.1.1 connection not closed after a 9-level publish")
		}
	})
	t.Run("greengrass", func(t *testing.T) {
		h := profileBroker(t, "greengrass", nil)
		_, got := h.observer(t, "#")
		c := h.mustConnectV3(h.createDevice("topics-g", "everything"))
		publishV3(t, c, deep, 1, false, "deep")
		expectMessage(t, got, deep+" deep")
	})
}

func TestClientIDRules(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	d := h.createDevice("id-1")
	for _, id := range []string{"$reserved", strings.Repeat("c", 129)} {
		ack, _, _, err := h.v5(t, d, paho.Connect{ClientID: id, CleanStart: true}, nil)
		if err == nil || ack == nil || ack.ReasonCode != 0x85 {
			t.Fatalf("client ID %.10s...: %v %+v, want CONNACK 0x85", id, err, ack)
		}
		if _, err := h.connectV3(d, id); err == nil || !strings.Contains(err.Error(), "identifier rejected") {
			t.Fatalf("MQTT 3.1.1 client ID %.10s...: %v, want return code 2", id, err)
		}
		h.record(t, "connection refused", map[string]string{"clientId": id, "reason": "CLIENT_ID_NOT_VALID"})
	}
	// greengrass has no such rule: a $ client ID is refused only because it is no thing.
	g := profileBroker(t, "greengrass", nil)
	if _, err := g.connectV3(g.createDevice("id-g"), "$reserved"); err == nil {
		t.Fatal("connected as $reserved")
	}
	g.record(t, "connection refused", map[string]string{"clientId": "$reserved", "reason": "CLIENT_ID_NOT_ATTACHED_THING"})
}

func TestQoS2(t *testing.T) {
	t.Run("iot-core", func(t *testing.T) {
		h := profileBroker(t, "iot-core", nil)
		obs, got := h.observer(t, "q/#")
		d := h.createDevice("qos-1", "everything")
		ack, c, gone, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Properties.MaximumQoS == nil || *ack.Properties.MaximumQoS != 1 {
			t.Fatalf("CONNACK Maximum QoS = %v, want 1", ack.Properties.MaximumQoS)
		}
		_, _ = c, gone
		// paho.golang will not send QoS 2 to a server that advertised Maximum QoS 1: send it raw.
		raw := h.rawV5(t, h.createDevice("qos-raw", "everything"), "qos-raw")
		pub := packets.NewControlPacket(packets.PUBLISH)
		pp := pub.Content.(*packets.Publish)
		pp.Topic, pp.QoS, pp.PacketID, pp.Payload = "q/two", 2, 1, []byte("x")
		if _, err := pub.WriteTo(raw); err != nil {
			t.Fatal(err)
		}
		reply, err := packets.ReadPacket(raw)
		if err != nil || reply.Type != packets.DISCONNECT || reply.Content.(*packets.Disconnect).ReasonCode != 0x9B {
			t.Fatalf("after a QoS 2 publish: %v %v, want DISCONNECT 0x9B", reply, err)
		}
		// MQTT 3.1.1: dropped, not acknowledged, not delivered.
		c3 := h.mustConnectV3(h.createDevice("qos-3", "everything"))
		c3.Publish("q/two", 2, false, "x")
		expectNoMessage(t, got, obs, "q/marker")
		h.record(t, "QoS not supported", map[string]string{"clientId": "qos-3", "reason": "QOS_NOT_SUPPORTED"})
	})
	t.Run("greengrass", func(t *testing.T) {
		h := profileBroker(t, "greengrass", nil)
		_, got := h.observer(t, "q/#")
		c := h.mustConnectV3(h.createDevice("qos-g", "everything"))
		publishV3(t, c, "q/two", 2, false, "ok")
		expectMessage(t, got, "q/two ok")
	})
}

func TestKeepAlive(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	d := h.createDevice("ka-1")
	for asked, want := range map[uint16]uint16{5: 30, 3000: 1200, 60: 60} {
		ack, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true, KeepAlive: asked}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := asked
		if ack.Properties != nil && ack.Properties.ServerKeepAlive != nil {
			got = *ack.Properties.ServerKeepAlive
		}
		if got != want {
			t.Errorf("keep-alive %d: Server Keep Alive %d, want %d", asked, got, want)
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}

	// A client silent past 1.5x its keep-alive is disconnected (short keep-alive: no long waits).
	short := profileBroker(t, "iot-core", func(b *config.Behaviour) { b.KeepAliveMinSeconds = "1" })
	ds := short.createDevice("ka-2")
	conn := short.rawV3(t, ds, ds.name, true, 1)
	defer conn.Close()
	short.record(t, "client disconnected", map[string]string{"clientId": "ka-2", "disconnectReason": "MQTT_KEEP_ALIVE_TIMEOUT"})
}

func TestSubscriptionLimits(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	d := h.createDevice("subs-1", "everything")
	_, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nine := make([]string, 9)
	for i := range nine {
		nine[i] = fmt.Sprintf("f/%d", i)
	}
	codes := subscribeV5(t, c, nine...)
	for i, code := range codes {
		if want := map[bool]byte{true: 1, false: 0x87}[i < 8]; code != want {
			t.Fatalf("SUBACK %v: filter %d got %#x, want %#x", codes, i, code, want)
		}
	}
	for i := 8; i < 50; i += 7 { // now 8 subscriptions; fill to 50
		var batch []string
		for j := i; j < min(i+7, 50); j++ {
			batch = append(batch, fmt.Sprintf("f/%d", j))
		}
		for _, code := range subscribeV5(t, c, batch...) {
			if code != 1 {
				t.Fatalf("subscription up to 50 refused: %#x", code)
			}
		}
	}
	if codes := subscribeV5(t, c, "f/50", "f/0"); codes[0] != 0x87 || codes[1] != 1 {
		t.Fatalf("51st subscription SUBACK %v, want [0x87 1] (re-subscribing an existing filter is fine)", codes)
	}
	h.record(t, "not authorized", map[string]string{"clientId": "subs-1", "reason": "REFUSED_BY_PROFILE"})

	g := profileBroker(t, "greengrass", nil)
	dg := g.createDevice("subs-g", "everything")
	_, cg, _, err := g.v5(t, dg, paho.Connect{ClientID: dg.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range subscribeV5(t, cg, nine...) {
		if code != 1 {
			t.Fatalf("greengrass refused one of 9 filters: %#x", code)
		}
	}
}

func TestReservedTopics(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	d := h.createDevice("res-1", "everything")
	_, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc := publishV5(t, c, "$custom/x", 1, "x"); rc != 0x87 {
		t.Fatalf("publish to $custom/x: PUBACK %#x, want 0x87", rc)
	}
	if rc := publishV5(t, c, "$aws/things/res-1/shadow/update", 1, "{}"); rc != 0 {
		t.Fatalf("publish to a shadow topic: PUBACK %#x", rc)
	}
	codes := subscribeV5(t, c, "$SYS/#", "$aws/events/presence/connected/+", "$aws/rules/x/y")
	if codes[0] != 0x87 || codes[1] != 1 || codes[2] != 0x87 {
		t.Fatalf("SUBACK %v, want [0x87 1 0x87]", codes)
	}

	g := profileBroker(t, "greengrass", nil)
	dg := g.createDevice("res-g", "everything")
	_, cg, _, err := g.v5(t, dg, paho.Connect{ClientID: dg.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// $SYS is off in both profiles (issue 17): the policy allows it, the profile does not.
	if codes := subscribeV5(t, cg, "$SYS/#"); codes[0] != 0x87 {
		t.Fatalf("greengrass: $SYS/# SUBACK %#x, want 0x87 (behaviour.sysTopics is off)", codes[0])
	}
	// Only the broker publishes lifecycle events, whatever the policy: a device cannot spoof them.
	if rc := publishV5(t, cg, "$aws/events/presence/connected/someone-else", 1, "{}"); rc != 0x87 {
		t.Fatalf("greengrass: publish to a lifecycle topic: PUBACK %#x, want 0x87", rc)
	}
	on := profileBroker(t, "greengrass", func(b *config.Behaviour) { b.SysTopics = "true" })
	don := on.createDevice("res-on", "everything")
	_, con, _, err := on.v5(t, don, paho.Connect{ClientID: don.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if codes := subscribeV5(t, con, "$SYS/#"); codes[0] != 1 {
		t.Fatalf("greengrass with behaviour.sysTopics true: $SYS/# SUBACK %#x", codes[0])
	}
}

// TestUnauthorizedV3 closes an MQTT 3.1.1 connection in iot-core, and keeps it in greengrass.
func TestUnauthorizedV3(t *testing.T) {
	for _, tc := range []struct {
		profile    string
		disconnect bool
	}{{"iot-core", true}, {"greengrass", false}} {
		t.Run(tc.profile, func(t *testing.T) {
			h := profileBroker(t, tc.profile, nil)
			h.writePolicy("sensor", sensorPolicy)
			for _, op := range []string{"publish", "subscribe"} {
				lost := make(chan error, 1)
				c := h.mustConnectV3(h.createDevice("unauth-"+op, "sensor"), func(o *pahov3.ClientOptions) {
					o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
				})
				if op == "publish" {
					c.Publish("not/mine", 1, false, "x")
				} else {
					c.Subscribe("not/mine", 1, nil)
				}
				if tc.disconnect {
					select {
					case <-lost:
					case <-time.After(waitFor):
						t.Fatalf("unauthorized %s did not close the connection", op)
					}
					h.record(t, "client disconnected", map[string]string{"clientId": "unauth-" + op, "disconnectReason": "FORBIDDEN_ACCESS"})
				} else {
					own := subscribeV3(t, c, "sensors/unauth-"+op+"/#", 1)
					publishV3(t, c, "sensors/unauth-"+op+"/alive", 1, false, "yes")
					expectMessage(t, own, "sensors/unauth-"+op+"/alive yes")
				}
			}
		})
	}
}

func TestSessionExpiry(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	d := h.createDevice("sess-5")
	ack, _, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(30 * 24 * 3600))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Properties.SessionExpiryInterval == nil || *ack.Properties.SessionExpiryInterval != 7*24*3600 {
		t.Fatalf("CONNACK Session Expiry %v, want 604800", ack.Properties.SessionExpiryInterval)
	}

	// MQTT 3.1.1 persistent sessions expire (1 hour on AWS; 1 second here, overridden).
	short := profileBroker(t, "iot-core", func(b *config.Behaviour) { b.SessionExpirySeconds = "1" })
	ds := short.createDevice("sess-3")
	persistent := func(o *pahov3.ClientOptions) { o.SetCleanSession(false) }
	c := short.mustConnectV3(ds, persistent)
	subscribeV3(t, c, "sess/#", 1)
	c.Disconnect(100)
	short.record(t, "persistent session expired", map[string]string{"clientId": "sess-3"})
	if present := sessionPresent(t, short, ds); present {
		t.Fatal("an expired session was still present")
	}
}

// sessionPresent reconnects with clean session false over a raw MQTT 3.1.1 CONNECT and returns the
// CONNACK's session present flag.
func sessionPresent(t *testing.T, h *harness, d *device) bool {
	t.Helper()
	conn := h.rawV3(t, d, d.name, false, 30)
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || buf[0] != 0x20 || buf[3] != 0 {
		t.Fatalf("CONNACK: %v %x", err, buf)
	}
	return buf[2]&1 == 1
}

// rawV3 opens an mTLS connection and writes an MQTT 3.1.1 CONNECT by hand (paho.golang's encoder is
// MQTT 5 only), without reading the CONNACK.
func (h *harness) rawV3(t *testing.T, d *device, clientID string, clean bool, keepAlive uint16) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, byte(keepAlive >> 8), byte(keepAlive), byte(len(clientID) >> 8), byte(len(clientID))}
	body = append(body, clientID...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// rawV5 opens an mTLS connection, connects over MQTT 5 with paho.golang's packet encoder and reads the
// CONNACK, for tests that must send what a well-behaved client library refuses to.
func (h *harness) rawV5(t *testing.T, d *device, clientID string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	connect := packets.NewControlPacket(packets.CONNECT)
	cp := connect.Content.(*packets.Connect)
	cp.ClientID, cp.KeepAlive, cp.CleanStart, cp.ProtocolName, cp.ProtocolVersion = clientID, 30, true, "MQTT", 5
	if _, err := connect.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	ack, err := packets.ReadPacket(conn)
	if err != nil || ack.Type != packets.CONNACK || ack.Content.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("raw MQTT 5 connect: %v %v", ack, err)
	}
	return conn
}

func ptr[T any](v T) *T { return &v }

func TestPublishRateLimit(t *testing.T) {
	h := profileBroker(t, "iot-core", func(b *config.Behaviour) { b.PublishesPerSecond = "5" })
	d := h.createDevice("rate-1", "everything")
	_, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, throttled := 0, 0
	for range 20 {
		switch rc := publishV5(t, c, "rate/x", 1, "x"); rc {
		case 0:
			ok++
		case 0x97:
			throttled++
		default:
			t.Fatalf("PUBACK %#x", rc)
		}
	}
	// 20 publishes span at most a few one-second windows: most are throttled.
	if throttled == 0 || ok > 15 {
		t.Fatalf("%d accepted, %d throttled, want at most 5 per second accepted", ok, throttled)
	}
	h.record(t, "publish refused", map[string]string{"clientId": "rate-1", "reason": "THROTTLED"})
}

// TestDuplicateClientID: the new connection wins, the old one gets DISCONNECT 0x8E, and one record is
// exactly like AWS'.
func TestDuplicateClientID(t *testing.T) {
	for _, profile := range []string{"greengrass", "iot-core"} {
		t.Run(profile, func(t *testing.T) {
			h := profileBroker(t, profile, nil)
			d := h.createDevice("dup-1")
			_, _, gone, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case dis := <-gone:
				if dis.ReasonCode != 0x8E {
					t.Fatalf("old connection got DISCONNECT %#x, want 0x8E", dis.ReasonCode)
				}
			case <-time.After(waitFor):
				t.Fatal("old connection not disconnected")
			}
			rec := h.record(t, "client disconnected", map[string]string{"clientId": "dup-1", "disconnectReason": "DUPLICATE_CLIENTID"})
			want := map[string]string{
				"eventType": "Disconnect", "status": "Failure", "reason": "DUPLICATE_CLIENT_ID",
				"details": "A new connection was established with the same client ID", "disconnectReason": "DUPLICATE_CLIENTID",
				"protocol": "MQTT", "accountId": "123456789012", "principalId": d.certID, "sourceIp": "127.0.0.1",
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("%s = %v, want %q", k, rec[k], v)
				}
			}
			if id, _ := rec["traceId"].(string); len(id) != 36 {
				t.Errorf("traceId %q is not a UUID", id)
			}
		})
	}
}

// TestLifecycleEvents: presence events with AWS' fields, delivered only to subscribers whose policy
// allows them, and an off switch.
func TestLifecycleEvents(t *testing.T) {
	h := profileBroker(t, "greengrass", nil)
	watcher := h.createDevice("watcher", "everything")
	events := make(chan string, 10)
	_, w, _, err := h.v5(t, watcher, paho.Connect{ClientID: watcher.name, CleanStart: true}, func(p paho.PublishReceived) { events <- string(p.Packet.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	subscribeV5(t, w, "$aws/events/presence/+/+")
	// The default policy does not allow $aws/ topics: this one never gets an event.
	blind := h.mustConnectV3(h.createDefaultDevice("blind"))
	blindGot := subscribeManyV3(t, blind, "$aws/events/presence/#", "blind/#")

	d := h.createDevice("life-1")
	c := h.mustConnectV3(d)
	connected := nextEvent(t, events, "life-1", "connected")
	c.Disconnect(100)
	disconnected := nextEvent(t, events, "life-1", "disconnected")
	for k, want := range map[string]any{"principalIdentifier": d.certID, "ipAddress": "127.0.0.1"} {
		if connected[k] != want {
			t.Errorf("connected.%s = %v, want %v", k, connected[k], want)
		}
	}
	for k, want := range map[string]any{"clientInitiatedDisconnect": true, "disconnectReason": "CLIENT_INITIATED_DISCONNECT", "principalIdentifier": d.certID} {
		if disconnected[k] != want {
			t.Errorf("disconnected.%s = %v, want %v", k, disconnected[k], want)
		}
	}
	if connected["sessionIdentifier"] == "" || connected["sessionIdentifier"] != disconnected["sessionIdentifier"] || connected["versionNumber"] != disconnected["versionNumber"] {
		t.Errorf("connect and disconnect events of one session differ: %v %v", connected, disconnected)
	}
	expectNoMessage(t, blindGot, blind, "blind/marker")
	h.record(t, "not authorized", map[string]string{"clientId": "blind", "action": "iot:Subscribe"})

	off := profileBroker(t, "greengrass", func(b *config.Behaviour) { b.LifecycleEvents = "false" })
	ow := off.mustConnectV3(off.createDevice("watcher-off", "everything"))
	offGot := subscribeManyV3(t, ow, "off/#", "$aws/events/#")
	off.mustConnectV3(off.createDevice("life-2")).Disconnect(100)
	off.record(t, "client disconnected", map[string]string{"clientId": "life-2"})
	expectNoMessage(t, offGot, ow, "off/marker")
}

// subscribeManyV3 subscribes to several filters in one SUBSCRIBE, all received on one channel (a
// refused filter is fine: the SUBACK is not checked).
func subscribeManyV3(t *testing.T, c pahov3.Client, filters ...string) <-chan string {
	t.Helper()
	got := make(chan string, 100)
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := c.SubscribeMultiple(m, func(_ pahov3.Client, msg pahov3.Message) { got <- msg.Topic() + " " + string(msg.Payload()) })
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
	return got
}

func nextEvent(t *testing.T, events <-chan string, clientID, eventType string) map[string]any {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case raw := <-events:
			var ev map[string]any
			if err := json.Unmarshal([]byte(raw), &ev); err != nil {
				t.Fatalf("event is not JSON: %s", raw)
			}
			if ev["clientId"] == clientID && ev["eventType"] == eventType {
				for _, k := range []string{"clientId", "timestamp", "eventType", "sessionIdentifier", "principalIdentifier", "versionNumber"} {
					if _, ok := ev[k]; !ok {
						t.Errorf("%s event has no %s: %s", eventType, k, raw)
					}
				}
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event for %s", eventType, clientID)
		}
	}
}
