package advisor

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"

	"github.com/eclipse/paho.golang/packets"
)

// tlsAttempt is one handshake with a chosen certificate.
type tlsAttempt struct {
	outcome handshakeOutcome
	err     error
	conn    *tls.Conn
}

// tryHandshake accepts the device's next connection and runs the handshake with cert. Connections
// whose client certificate is not the device's are noted and waited past.
func (tc *testCtx) tryHandshake(ctx context.Context, cert *tls.Certificate, onHello func(*tls.ClientHelloInfo)) (*tlsAttempt, error) {
	for {
		raw, err := tc.accept(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := tc.handshake(ctx, raw, cert, onHello)
		a := &tlsAttempt{outcome: classifyHandshake(err), err: err, conn: conn}
		if a.outcome == handshakeNotDevice {
			tc.lastRefusal = err.Error()
			tc.notef("handshake from %s refused: %v", raw.RemoteAddr(), err)
			continue
		}
		if ctx.Err() != nil && a.outcome != handshakeDone {
			return nil, ctx.Err()
		}
		return a, nil
	}
}

// TLS_Connect: a normal handshake; MQTT is not looked at (DA-TLS).
func runTLSConnect(ctx context.Context, tc *testCtx) verdict {
	a, err := tc.tryHandshake(ctx, tc.run.certs.normal, nil)
	if err != nil {
		return tc.timedOut("the device did not complete a TLS handshake")
	}
	if a.outcome != handshakeDone {
		return fail("TLS handshake failed: %v", a.err)
	}
	tc.notef("handshake completed: %s, %s", tlsVersionName(a.conn.ConnectionState().Version), tls.CipherSuiteName(a.conn.ConnectionState().CipherSuite))
	return pass()
}

// refusalCase is the shape of the three cases where the device must refuse the server: PASS when
// it aborts the handshake, FAIL when it completes it.
func refusalCase(ctx context.Context, tc *testCtx, cert *tls.Certificate, completed string, alertRequired bool) verdict {
	a, err := tc.tryHandshake(ctx, cert, nil)
	if err != nil {
		return tc.timedOut("the device did not attempt a TLS handshake")
	}
	switch a.outcome {
	case handshakeDone:
		return fail("%s", completed)
	case handshakeAlert:
		tc.notef("the device refused the certificate: %v", a.err)
		return pass()
	case handshakeClosed:
		tc.notef("the device closed the connection without a TLS alert: %v", a.err)
		if alertRequired {
			return warn("the device refused the certificate but closed the connection without sending a TLS alert")
		}
		return pass()
	}
	return errVerdict("the handshake failed on the endpoint's side: %v", a.err)
}

// TLS_Unsecure_Server_Cert: a certificate signed by a CA the device does not trust.
func runUnsecureServerCert(ctx context.Context, tc *testCtx) verdict {
	return refusalCase(ctx, tc, tc.run.certs.unknownCA,
		"the device completed the handshake with a certificate signed by an unknown CA: it does not verify the server", false)
}

// TLS_Incorrect_Subject_Name_Server_Cert: a valid certificate for another name.
func runIncorrectSubjectName(ctx context.Context, tc *testCtx) verdict {
	return refusalCase(ctx, tc, tc.run.certs.wrongName,
		fmt.Sprintf("the device completed the handshake with a certificate for %s only: it does not check the server's name", WrongServerName), false)
}

// TLS_Expired_Server_Cert: an expired certificate; an alert before closing is expected (DA-TLS).
func runExpiredServerCert(ctx context.Context, tc *testCtx) verdict {
	return refusalCase(ctx, tc, tc.run.certs.expired,
		"the device completed the handshake with an expired certificate: it does not check the validity period", true)
}

// TLS_Large_Size_Server_Cert: a chain at least 20% larger than the normal one.
func runLargeServerCert(ctx context.Context, tc *testCtx) verdict {
	tc.notef("server chain of %d bytes (normal: %d)", chainSize(tc.run.certs.large), chainSize(tc.run.certs.normal))
	a, err := tc.tryHandshake(ctx, tc.run.certs.large, nil)
	if err != nil {
		return tc.timedOut("the device did not complete a TLS handshake")
	}
	if a.outcome != handshakeDone {
		return fail("TLS handshake with a %d-byte server certificate chain failed (%v): enlarge the device's TLS receive buffer", chainSize(tc.run.certs.large), a.err)
	}
	return pass()
}

// AWS IoT's cipher suites (aws-iot-docs developerguide/transport-security.md, advisor.md §3 TLS):
// the two recommended, the rest supported. TLS 1.3's suites are supported too (DA-TLS note).
var (
	recommendedSuites = map[uint16]bool{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: true,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:   true,
	}
	supportedSuites = map[uint16]bool{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256: true, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256: true,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: true, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: true,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: true, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: true,
		0xc024: true, 0xc028: true, // ECDHE-ECDSA-AES256-SHA384, ECDHE-RSA-AES256-SHA384
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: true, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: true,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256: true, tls.TLS_RSA_WITH_AES_128_CBC_SHA256: true, tls.TLS_RSA_WITH_AES_128_CBC_SHA: true,
		tls.TLS_RSA_WITH_AES_256_GCM_SHA384: true, 0x003d: true, tls.TLS_RSA_WITH_AES_256_CBC_SHA: true, // 0x003d: AES256-SHA256
		tls.TLS_AES_128_GCM_SHA256: true, tls.TLS_AES_256_GCM_SHA384: true, tls.TLS_CHACHA20_POLY1305_SHA256: true,
	}
)

// CipherVerdict grades the cipher suites of a ClientHello (advisor.md §3): PASS with at least one
// recommended suite and no unsupported one; PASS_WITH_WARNINGS with AWS IoT suites but none
// recommended, or with unsupported ones too; FAIL with no supported suite. Signalling values
// (TLS_EMPTY_RENEGOTIATION_INFO_SCSV, TLS_FALLBACK_SCSV) and GREASE (RFC 8701) are not suites.
func CipherVerdict(offered []uint16) (Status, string) {
	var rec, sup, unsup []string
	for _, s := range offered {
		switch {
		case s == 0x00ff || s == 0x5600 || s&0x0f0f == 0x0a0a && s>>8 == s&0xff:
			continue
		case recommendedSuites[s]:
			rec = append(rec, suiteName(s))
		case supportedSuites[s]:
			sup = append(sup, suiteName(s))
		default:
			unsup = append(unsup, suiteName(s))
		}
	}
	switch {
	case len(rec) == 0 && len(sup) == 0:
		return StatusFail, "the device offers no cipher suite AWS IoT supports: " + strings.Join(unsup, ", ")
	case len(unsup) > 0:
		return StatusPassWithWarnings, "the device also offers cipher suites AWS IoT does not support: " + strings.Join(unsup, ", ")
	case len(rec) == 0:
		return StatusPassWithWarnings, "the device offers AWS IoT cipher suites but neither recommended one (ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256)"
	}
	return StatusPass, ""
}

func suiteName(s uint16) string {
	if n := tls.CipherSuiteName(s); !strings.HasPrefix(n, "0x") {
		return n
	}
	return fmt.Sprintf("0x%04X", s)
}

// TLS_Support_AWS_IoT_Cipher_Suites: the verdict comes from the ClientHello.
func runCipherSuites(ctx context.Context, tc *testCtx) verdict {
	var mu sync.Mutex
	var offered []uint16
	a, err := tc.tryHandshake(ctx, tc.run.certs.normal, func(h *tls.ClientHelloInfo) {
		mu.Lock()
		offered = append([]uint16(nil), h.CipherSuites...)
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()
	if err != nil && offered == nil {
		return tc.timedOut("the device sent no ClientHello")
	}
	if a != nil && a.outcome != handshakeDone {
		tc.notef("handshake did not complete: %v", a.err)
	}
	names := make([]string, 0, len(offered))
	for _, s := range offered {
		names = append(names, suiteName(s))
	}
	tc.notef("offered: %s", strings.Join(names, ", "))
	st, reason := CipherVerdict(offered)
	return verdict{st, reason}
}

// fragmentPayloadSize is the ${payload} string's length: one full TLS record of plaintext
// (2^14 bytes, RFC 8446 §5.1), so the message spans maximum-size fragments.
const fragmentPayloadSize = 1 << 14

// TLS_Receive_Maximum_Size_Fragments: after the device subscribes with QoS 1, a message larger than
// a TLS record is published to it; it must PUBACK it.
func runMaxFragments(ctx context.Context, tc *testCtx) verdict {
	format, _, _ := tc.cfg.String("PAYLOAD_FORMAT")
	body := strings.Repeat("a", fragmentPayloadSize)
	payload := body
	if format != "" {
		payload = strings.ReplaceAll(format, "${payload}", body)
	}
	return deliverAndAwaitPuback(ctx, tc, []byte(payload), fmt.Sprintf("%d-byte", len(payload)))
}

// deliverAndAwaitPuback waits for a QoS 1 subscription to the trigger topic, publishes payload to it
// with QoS 1 and waits for the PUBACK.
func deliverAndAwaitPuback(ctx context.Context, tc *testCtx, payload []byte, what string) verdict {
	want, _, _ := tc.cfg.String("TRIGGER_TOPIC")
	for {
		s, err := tc.acceptSession(ctx)
		if err != nil {
			return tc.timedOut("the device did not connect")
		}
		if err := s.connack(false); err != nil {
			continue
		}
		topic, id := "", uint16(0)
		for {
			cp, err := s.next(ctx)
			if err == errDeviceClosed {
				tc.notef("the device closed the connection; waiting for it to reconnect")
				break
			}
			if err != nil {
				if topic == "" {
					return tc.timedOut("the device did not subscribe with QoS 1" + topicSuffix(want))
				}
				return tc.timedOut(fmt.Sprintf("the device did not PUBACK the %s QoS 1 message on %s", what, topic))
			}
			_ = s.answer(cp, blockSet{})
			switch p := cp.Content.(type) {
			case *packets.Subscribe:
				if topic != "" {
					continue
				}
				for _, o := range p.Subscriptions {
					if o.QoS >= 1 && (o.Topic == want || want == "" && !strings.ContainsAny(o.Topic, "+#")) {
						topic = o.Topic
						break
					}
				}
				if topic != "" {
					if id, err = s.publish(topic, 1, payload); err != nil {
						return errVerdict("publishing to the device: %v", err)
					}
					tc.notef("published a %s QoS 1 message (packet ID %d) on %s", what, id, topic)
				}
			case *packets.Puback:
				if topic != "" && p.PacketID == id {
					return pass()
				}
			}
		}
	}
}

func topicSuffix(t string) string {
	if t == "" {
		return ""
	}
	return " to " + t
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLS 1.3"
	case tls.VersionTLS12:
		return "TLS 1.2"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}
