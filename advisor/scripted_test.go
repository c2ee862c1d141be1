package advisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ggbroker/ggbroker/advisor/refdevice"
	"github.com/ggbroker/ggbroker/auth"
)

// scripted is a device written out step by step for one acceptance case.
type scripted struct {
	t   *testing.T
	f   *fixture
	ctx context.Context
}

// dial connects with TLS (verifying the server, unless cfg says otherwise), retrying while the
// endpoint refuses connections between cases.
func (s *scripted) dial(cfg *tls.Config) (*tls.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{ServerName: "localhost", RootCAs: s.f.core.Pool()}
	}
	cfg.Certificates = []tls.Certificate{s.f.cert}
	for s.ctx.Err() == nil {
		c, err := tls.Dial("tcp", s.f.ln.Addr().String(), cfg)
		if err == nil {
			return c, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, s.ctx.Err()
}

// mqtt connects and returns the connection after its CONNACK.
func (s *scripted) mqtt(clean bool, keepAlive uint16) (net.Conn, *packets.Connack, error) {
	c, err := s.dial(nil)
	if err != nil {
		return nil, nil, err
	}
	cp := packets.NewControlPacket(packets.CONNECT)
	con := cp.Content.(*packets.Connect)
	con.ClientID, con.CleanStart, con.KeepAlive = "dut", clean, keepAlive
	exp := uint32(600)
	con.Properties.SessionExpiryInterval = &exp
	if _, err := cp.WriteTo(c); err != nil {
		return nil, nil, err
	}
	ack, err := packets.ReadPacket(c)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	go func() { // drain the rest
		for {
			if _, err := packets.ReadPacket(c); err != nil {
				return
			}
		}
	}()
	return c, ack.Content.(*packets.Connack), nil
}

func publish(c net.Conn, topic string, qos byte, id uint16, dup bool) {
	cp := packets.NewControlPacket(packets.PUBLISH)
	p := cp.Content.(*packets.Publish)
	p.Topic, p.QoS, p.PacketID, p.Duplicate, p.Payload = topic, qos, id, dup, []byte("x")
	_, _ = cp.WriteTo(c)
}

func subscribe(c net.Conn, topic string, id uint16) {
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID, s.Subscriptions = id, []packets.SubOptions{{Topic: topic, QoS: 1}}
	_, _ = cp.WriteTo(c)
}

// runScripted runs one case against a scripted device and returns its result.
func runScripted(t *testing.T, id string, cfg Config, device func(s *scripted)) Result {
	t.Helper()
	return runScriptedPolicy(t, scopedPolicy, id, cfg, device)
}

func runScriptedPolicy(t *testing.T, policyDoc, id string, cfg Config, device func(s *scripted)) Result {
	t.Helper()
	f := newFixture(t, policyDoc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if device != nil {
		go func() { defer close(done); device(&scripted{t: t, f: f, ctx: ctx}) }()
	} else {
		close(done)
	}
	suite, err := TestsSuite("one", []string{id})
	if err != nil {
		t.Fatal(err)
	}
	suite.Groups[0].Cases[0].Configuration = cfg
	opts := f.options()
	opts.Timeout = 1500 * time.Millisecond
	rep, err := Run(context.Background(), suite, opts)
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	return rep.Results[0]
}

func expect(t *testing.T, r Result, st Status, reason string) {
	t.Helper()
	if r.Status != st || !strings.Contains(r.Reason(), reason) {
		t.Errorf("%s: %s %q, want %s containing %q; details: %v", r.TestID, r.Status, r.Reason(), st, reason, r.Details)
	}
}

// TestTLSAcceptance covers acceptance cases 1 and 4 with devices the reference ones are not.
func TestTLSAcceptance(t *testing.T) {
	t.Parallel()
	t.Run("TLS_Connect handshake aborted midway", func(t *testing.T) {
		r := runScripted(t, "TLS_Connect", nil, func(s *scripted) {
			for s.ctx.Err() == nil {
				if c, err := net.Dial("tcp", s.f.ln.Addr().String()); err == nil {
					_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a ClientHello record cut short
					c.Close()
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		expect(t, r, StatusFail, "TLS handshake failed")
	})
	t.Run("TLS_Expired_Server_Cert closed without an alert", func(t *testing.T) {
		r := runScripted(t, "TLS_Expired_Server_Cert", nil, func(s *scripted) {
			for s.ctx.Err() == nil {
				raw, err := net.Dial("tcp", s.f.ln.Addr().String())
				if err != nil {
					return
				}
				c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{s.f.cert},
					VerifyPeerCertificate: func(certs [][]byte, _ [][]*x509.Certificate) error {
						leaf, _ := x509.ParseCertificate(certs[0])
						if time.Now().After(leaf.NotAfter) {
							raw.Close() // refuse, but silently: no alert reaches the server
							return errors.New("expired")
						}
						return nil
					}})
				_ = c.Handshake()
				c.Close()
				time.Sleep(20 * time.Millisecond)
			}
		})
		expect(t, r, StatusPassWithWarnings, "without sending a TLS alert")
	})
}

// TestOnlyTheDeviceIsAccepted: a client certificate that is not an ACTIVE certificate of the thing
// under test (another thing's) is refused at the handshake, and the case waits for the device.
func TestOnlyTheDeviceIsAccepted(t *testing.T) {
	t.Parallel()
	r := runScripted(t, "TLS_Connect", Config{"EXECUTION_TIMEOUT": "1.5"}, func(s *scripted) {
		other, err := auth.CreateDevice(s.f.registry, s.f.devCA, auth.NewDevice{Thing: auth.Thing{Name: "other"}})
		if err != nil {
			s.t.Error(err)
			return
		}
		cert, _ := tls.X509KeyPair(other.CertPEM, other.KeyPEM)
		for s.ctx.Err() == nil {
			if c, err := tls.Dial("tcp", s.f.ln.Addr().String(), &tls.Config{ServerName: "localhost", RootCAs: s.f.core.Pool(), Certificates: []tls.Certificate{cert}}); err == nil {
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	expect(t, r, StatusFail, `is not an ACTIVE certificate of thing "dut"`)
}

// TestMQTTAcceptance covers acceptance cases 8 to 11, 15 to 17 and 21 with scripted devices.
func TestMQTTAcceptance(t *testing.T) {
	t.Parallel()
	publisher := func(topic string, qos byte) func(*scripted) {
		return func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			publish(c, topic, qos, 1, false)
			<-s.ctx.Done()
		}
	}
	cases := []struct {
		name   string
		id     string
		cfg    Config
		device func(*scripted)
		want   Status
		reason string
	}{
		{"no CONNECT before the timeout", "MQTT_Connect", Config{"EXECUTION_TIMEOUT": "0.3"}, nil, StatusFail, "EXECUTION_TIMEOUT 0.3s passed: the device sent no CONNECT"},
		{"publish on a/c only", "MQTT_Publish", Config{"TOPIC_FOR_PUBLISH_VALIDATION": "a/b", "EXECUTION_TIMEOUT": "1.5"}, publisher("a/c", 0), StatusFail, "seen: QoS 0 on a/c"},
		{"publish on a/b", "MQTT_Publish", Config{"TOPIC_FOR_PUBLISH_VALIDATION": "a/b"}, publisher("a/b", 0), StatusPass, ""},
		{"publish on a/b with QoS 1", "MQTT_Publish", Config{"TOPIC_FOR_PUBLISH_VALIDATION": "a/b"}, publisher("a/b", 1), StatusFail, "this case wants QoS 0"},
		{"republish id 7 with DUP", "MQTT_Publish_Retry_No_Puback", nil, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			publish(c, "a/b", 1, 7, false)
			time.Sleep(50 * time.Millisecond)
			publish(c, "a/b", 1, 7, true)
			<-s.ctx.Done()
		}, StatusPass, ""},
		{"republish with new id 8", "MQTT_Publish_Retry_No_Puback", nil, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			publish(c, "a/b", 1, 7, false)
			publish(c, "a/b", 1, 8, false)
			<-s.ctx.Done()
		}, StatusFail, "new packet ID 8 instead of 7"},
		{"a reconnection starts the case over", "MQTT_Publish_Retry_No_Puback", nil, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			publish(c, "a/b", 1, 7, false)
			time.Sleep(50 * time.Millisecond)
			c.Close()
			c, _, err = s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			publish(c, "a/b", 1, 9, false)
			publish(c, "a/b", 1, 9, true)
			<-s.ctx.Done()
		}, StatusPass, ""},
		{"resubscribe with the same id", "MQTT_Subscribe_Retry_No_Suback", nil, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			subscribe(c, "a/#", 3)
			subscribe(c, "a/#", 3)
			<-s.ctx.Done()
		}, StatusPass, ""},
		{"resubscribe with another id", "MQTT_Subscribe_Retry_No_Suback", nil, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			subscribe(c, "a/#", 3)
			subscribe(c, "a/#", 4)
			<-s.ctx.Done()
		}, StatusFail, "new packet ID 4 instead of 3"},
		{"no SUBSCRIBE retry", "MQTT_Subscribe_Retry_No_Suback", Config{"EXECUTION_TIMEOUT": "1.5"}, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			subscribe(c, "a/#", 3)
			<-s.ctx.Done()
		}, StatusFail, "did not send again the SUBSCRIBE with packet ID 3"},
		{"never disconnects without PINGRESP", "MQTT_No_Ack_PingResp", Config{"EXECUTION_TIMEOUT": "1.5"}, func(s *scripted) {
			c, _, err := s.mqtt(true, 1)
			if err != nil {
				return
			}
			defer c.Close()
			for s.ctx.Err() == nil {
				_, _ = packets.NewControlPacket(packets.PINGREQ).WriteTo(c)
				publish(c, "a/b", 0, 0, false)
				time.Sleep(300 * time.Millisecond)
			}
		}, StatusFail, "PINGREQs unanswered (keep alive 1 s)"},
		{"persistent session case with a clean session", "MQTT_Persistent_Session_Happy_Case", Config{"TRIGGER_TOPIC": "myTrigger/topic"}, func(s *scripted) {
			c, _, err := s.mqtt(true, 0)
			if err != nil {
				return
			}
			defer c.Close()
			subscribe(c, "myTrigger/topic", 1)
			<-s.ctx.Done()
		}, StatusFail, "clean session"},
		{"expired session without a new SUBSCRIBE", "MQTT_Expired_Persistent_Session", Config{"TRIGGER_TOPIC": "myTrigger/topic", "EXECUTION_TIMEOUT": "2"}, func(s *scripted) {
			c, _, err := s.mqtt(false, 0)
			if err != nil {
				return
			}
			subscribe(c, "myTrigger/topic", 1)
			for s.ctx.Err() == nil { // reconnect when dropped, never subscribe again
				buf := make([]byte, 1)
				if _, err := c.Read(buf); err != nil {
					c, _, err = s.mqtt(false, 0)
					if err != nil {
						return
					}
				}
			}
		}, StatusFail, "did not subscribe to myTrigger/topic again"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			expect(t, runScripted(t, c.id, c.cfg, c.device), c.want, c.reason)
		})
	}
}

// TestSecurityDevicePolicies is acceptance case 21.
func TestSecurityDevicePolicies(t *testing.T) {
	t.Parallel()
	wild := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`
	expect(t, runScriptedPolicy(t, wild, "Security_Device_Policies", nil, nil), StatusFail, `allows every action ("iot:*")`)
	expect(t, runScriptedPolicy(t, scopedPolicy, "Security_Device_Policies", nil, nil), StatusPass, "")
	notRes := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:Publish","NotResource":"arn:aws:iot:*:*:topic/$aws/*"}}`
	expect(t, runScriptedPolicy(t, notRes, "Security_Device_Policies", nil, nil), StatusFail, "NotResource")
}

// TestServiceSeam: a shadow case runs only through Options.Services; without it the case is an
// ERROR, never a PASS; with it, the ServiceCase drives the device's connection.
func TestServiceSeam(t *testing.T) {
	t.Parallel()
	suite, err := TestsSuite("shadow", []string{"Shadow_Publish_Reported_State"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), suite, newFixture(t, scopedPolicy).options())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep.Results[0], StatusError, "service not available: the shadow service")
	f := newFixture(t, scopedPolicy)
	f.start(t, refdevice.WellBehaved(20*time.Millisecond, 200*time.Millisecond))
	opts := f.options()
	opts.Services = map[string]ServiceCase{"Shadow_Publish_Reported_State": func(ctx context.Context, tc *TestContext) (Status, string) {
		s, err := tc.Accept(ctx)
		if err != nil {
			return StatusFail, err.Error()
		}
		for {
			cp, err := s.Next(ctx)
			if err != nil {
				return StatusFail, "no publish"
			}
			_ = s.Answer(cp)
			if p, ok := cp.Content.(*packets.Publish); ok && s.ClientID() == tc.Thing {
				tc.Notef("fake shadow service saw %s", p.Topic)
				return StatusPass, ""
			}
		}
	}}
	rep, err = Run(context.Background(), suite, opts)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep.Results[0], StatusPass, "")
}

// TestClientPubackPayloadSize is acceptance case 12: PAYLOAD_SIZE "100" sends a 100 KB payload.
func TestClientPubackPayloadSize(t *testing.T) {
	t.Parallel()
	f := newFixture(t, scopedPolicy)
	f.start(t, refdevice.WellBehaved(20*time.Millisecond, 200*time.Millisecond))
	suite, _ := TestsSuite("one", []string{"MQTT_Client_Puback_QoS1"})
	suite.Configuration = Config{"PAYLOAD_SIZE": "100", "TRIGGER_TOPIC": "ref/trigger"}
	rep, err := Run(context.Background(), suite, f.options())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep.Results[0], StatusPass, "")
	if d := strings.Join(rep.Results[0].Details, " "); !strings.Contains(d, "102400-byte QoS 1 message") {
		t.Errorf("details: %s", d)
	}
}

// TestRunStopped: a run stopped midway (SIGINT in the command) marks the running and the remaining
// cases CANCELED, and does not pass.
func TestRunStopped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, scopedPolicy)
	suite, _ := TestsSuite("two", []string{"MQTT_Connect", "MQTT_Subscribe"})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, suite, f.options())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != StatusCanceled || rep.Passed() || rep.Results[0].Status != StatusCanceled || rep.Results[1].Status != StatusCanceled {
		t.Errorf("suite %s, passed %t, cases %s %s", rep.Status, rep.Passed(), rep.Results[0].Status, rep.Results[1].Status)
	}
	var buf strings.Builder
	_ = rep.WriteJUnit(&buf)
	if !strings.Contains(buf.String(), `skipped="2"`) {
		t.Errorf("CANCELED cases are not <skipped>:\n%s", buf.String())
	}
}
