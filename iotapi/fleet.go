package iotapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/provisioning"
	"github.com/ggbroker/ggbroker/service"
)

// Fleet provisioning by claim over MQTT (reference/services/provisioning.md (b), FP-API): a device
// with a claim certificate asks for a certificate on $aws/certificates/create[-from-csr]/json, gets it
// with an ownership token, and registers a thing with it on
// $aws/provisioning-templates/<name>/provision/json; answers go to <request topic>/accepted or
// /rejected, in the payload format of the request (json or cbor).
const (
	topicCreate        = "$aws/certificates/create/"
	topicCreateFromCSR = "$aws/certificates/create-from-csr/"
	topicTemplates     = "$aws/provisioning-templates/"
	tokenBucket        = "iotapi-ownership-tokens"
	// maxFleetInFlight bounds the fleet provisioning requests worked on at once.
	maxFleetInFlight = 16
)

// ownership is what an ownership token stands for.
type ownership struct {
	CertificateID string    `json:"certificateId"`
	Expires       time.Time `json:"expires"`
}

// fleetError is the rejected payload: {"statusCode","errorCode","errorMessage"} (FP-API).
type fleetError struct {
	StatusCode   int    `json:"statusCode"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

func (e *fleetError) Error() string { return e.ErrorCode + ": " + e.ErrorMessage }

func rejected(status int, code, format string, args ...any) *fleetError {
	return &fleetError{StatusCode: status, ErrorCode: code, ErrorMessage: fmt.Sprintf(format, args...)}
}

// startFleet registers the fleet provisioning topics and the sweep of expired ownership tokens.
func (s *Service) startFleet(ctx context.Context, host service.Host) error {
	store, err := host.Store(tokenBucket)
	if err != nil {
		return err
	}
	s.tokens = store
	s.fleetSlots = make(chan struct{}, maxFleetInFlight)
	for filter, fn := range map[string]func(*service.Message, string) (any, error){
		topicCreate + "+":                s.fleetCreateKeys,
		topicCreateFromCSR + "+":         s.fleetCreateFromCSR,
		topicTemplates + "+/provision/+": s.fleetRegisterThing,
	} {
		if err := host.Handle(filter, s.fleetHandler(fn)); err != nil {
			return err
		}
	}
	s.wg.Go(func() { s.sweepTokens(ctx) })
	return nil
}

// fleetHandler answers one request in the background (making an RSA key takes a while; a handler
// must be quick) and consumes it: the request is the service's, not a message for subscribers.
func (s *Service) fleetHandler(fn func(*service.Message, string) (any, error)) service.Handler {
	return func(_ context.Context, m *service.Message) error {
		format := m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]
		if format != "json" && format != "cbor" {
			s.log.Warn("fleet provisioning request in a payload format that does not exist (json or cbor)",
				zap.String("topicName", m.Topic), zap.String("clientId", clientIDOf(m.From)))
			return service.Consumed
		}
		req := *m
		// Bounded: each request may make an RSA key; a flood is throttled, not queued without end.
		select {
		case s.fleetSlots <- struct{}{}:
		default:
			s.wg.Go(func() {
				s.answer(&req, format, nil, rejected(429, "ThrottlingException", "too many fleet provisioning requests in progress; retry"))
			})
			return service.Consumed
		}
		s.wg.Go(func() {
			defer func() { <-s.fleetSlots }()
			// A CBOR request is read as the same JSON document, and answered in CBOR (FP-API).
			if format == "cbor" && len(req.Payload) > 0 {
				v, err := provisioning.DecodeCBOR(req.Payload)
				if err != nil {
					s.answer(&req, format, nil, rejected(400, "InvalidPayload", "the payload is not CBOR: %v", err))
					return
				}
				req.Payload, _ = json.Marshal(v)
			}
			out, err := fn(&req, req.Topic)
			s.answer(&req, format, out, err)
		})
		return service.Consumed
	}
}

// fleetRequest names a request topic's kind for the metric.
func fleetRequest(topic string) string {
	switch {
	case strings.HasPrefix(topic, topicCreate):
		return "create"
	case strings.HasPrefix(topic, topicCreateFromCSR):
		return "create-from-csr"
	}
	return "provision"
}

func clientIDOf(c *service.Client) string {
	if c == nil {
		return ""
	}
	return c.ClientID
}

// answer sends the accepted or rejected payload to the requester only (SendTo: it must have
// subscribed, as the SDK samples do before they publish).
func (s *Service) answer(m *service.Message, format string, out any, err error) {
	topic := m.Topic + "/accepted"
	result := "accepted"
	defer func() { s.metrics.fleet.WithLabelValues(fleetRequest(m.Topic), result).Inc() }()
	var fe *fleetError
	if err != nil {
		if !errors.As(err, &fe) {
			s.log.Error("fleet provisioning failed", zap.String("topicName", m.Topic), zap.String("clientId", clientIDOf(m.From)), zap.Error(err))
			fe = rejected(500, "InternalFailure", "the request failed; the broker's log says why")
		} else {
			s.log.Info("fleet provisioning request rejected", zap.String("topicName", m.Topic), zap.String("clientId", clientIDOf(m.From)),
				zap.String("reason", fe.ErrorCode), zap.String("details", fe.ErrorMessage))
		}
		topic, out, result = m.Topic+"/rejected", fe, fe.ErrorCode
	}
	payload, _ := json.Marshal(out)
	if format == "cbor" {
		var v any
		_ = json.Unmarshal(payload, &v)
		if payload, err = provisioning.EncodeCBOR(v); err != nil {
			s.log.Error("fleet provisioning answer not encoded", zap.String("topicName", topic), zap.Error(err))
			return
		}
	}
	if err := s.host.SendTo(m.From, service.Message{Topic: topic, Payload: payload, QoS: m.QoS}, service.SendOptions{RequireSubscription: true}); err != nil {
		s.log.Warn("fleet provisioning answer not delivered", zap.String("topicName", topic), zap.String("clientId", clientIDOf(m.From)), zap.Error(err))
	}
}

// newToken stores an ownership token for a certificate, valid for ownershipTokenValidity (AWS: 1 h).
func (s *Service) newToken(certID string) (string, error) {
	var b [48]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	raw, _ := json.Marshal(ownership{CertificateID: certID, Expires: time.Now().Add(s.cfg.OwnershipTokenValidity)})
	if err := s.tokens.Put(tok, raw); err != nil {
		return "", err
	}
	return tok, nil
}

func (s *Service) fleetCreateKeys(m *service.Message, _ string) (any, error) {
	certPEM, keyPEM, cert, err := s.state.DeviceCA.IssueClient(awsCertCommonName, certs.RSA2048, s.clientValidity())
	if err != nil {
		return nil, err
	}
	rec, err := s.state.Registry.AddCertificate(cert, auth.StatusPendingActivation, "")
	if err != nil {
		return nil, err
	}
	tok, err := s.newToken(rec.ID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"certificateId": rec.ID, "certificatePem": string(certPEM), "privateKey": string(keyPEM), "certificateOwnershipToken": tok}, nil
}

func (s *Service) fleetCreateFromCSR(m *service.Message, _ string) (any, error) {
	var in struct {
		CSR string `json:"certificateSigningRequest"`
	}
	if err := json.Unmarshal(m.Payload, &in); err != nil {
		return nil, rejected(400, "InvalidPayload", "the payload is not JSON: %v", err)
	}
	cert, certPEM, err := SignCSR(s.state.DeviceCA, in.CSR, s.clientValidity())
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return nil, rejected(400, "InvalidCSR", "%s", ae.msg)
		}
		return nil, err
	}
	rec, err := s.state.Registry.AddCertificate(cert, auth.StatusPendingActivation, "")
	if err != nil {
		return nil, err
	}
	tok, err := s.newToken(rec.ID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"certificateId": rec.ID, "certificatePem": string(certPEM), "certificateOwnershipToken": tok}, nil
}

func (s *Service) fleetRegisterThing(m *service.Message, topic string) (any, error) {
	name := strings.TrimPrefix(topic, topicTemplates)
	name = name[:strings.Index(name, "/provision/")]
	var in struct {
		Token      string            `json:"certificateOwnershipToken"`
		Parameters map[string]string `json:"parameters"`
	}
	if err := json.Unmarshal(m.Payload, &in); err != nil {
		return nil, rejected(400, "InvalidPayload", "the payload is not JSON of the RegisterThing request: %v", err)
	}
	if in.Token == "" {
		// Word for word what AWS answers (aws/aws-iot-device-sdk-js-v2#69).
		return nil, rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")
	}
	raw, err := s.tokens.Get(in.Token)
	if err != nil {
		return nil, err
	}
	var own ownership
	if raw == nil || json.Unmarshal(raw, &own) != nil {
		return nil, rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid.")
	}
	if time.Now().After(own.Expires) {
		s.expireToken(in.Token, own)
		return nil, rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token has expired.")
	}
	tpl, err := s.catalog.Template(name)
	if err != nil {
		return nil, rejected(404, "ResourceNotFound", "provisioning template %s does not exist", name)
	}
	switch {
	case tpl.Type != provisioning.TypeFleet:
		return nil, rejected(400, "InvalidRequest", "provisioning template %s is a %s template, not a fleet provisioning one", name, tpl.Type)
	case !tpl.Enabled:
		return nil, rejected(400, "InvalidRequest", "provisioning template %s is disabled", name)
	case tpl.Hook != nil:
		return nil, rejected(400, "InvalidRequest", "provisioning template %s has a pre-provisioning hook (%s): a Lambda cannot run offline, so ggbroker refuses the template's provisioning", name, tpl.Hook.TargetArn)
	}
	parsed, err := provisioning.ParseTemplate(tpl.Body, provisioning.TypeFleet)
	if err != nil {
		return nil, rejected(400, "InvalidRequest", "provisioning template %s: %v", name, err)
	}
	params := map[string]string{}
	for k, v := range in.Parameters {
		params[k] = v
	}
	params["AWS::IoT::Certificate::Id"] = own.CertificateID
	plan, err := parsed.Resolve(params)
	if err != nil {
		return nil, rejected(400, "InvalidParameters", "provisioning template %s: %v", name, err)
	}
	if plan.CertificateID != own.CertificateID {
		return nil, rejected(400, "InvalidRequest", "provisioning template %s provisions certificate %s, not the one the ownership token is for", name, plan.CertificateID)
	}
	res, err := plan.Apply(s.state.Registry, s.state.PolicyDir)
	if err != nil {
		if errors.Is(err, provisioning.ErrResourceConflict) {
			return nil, rejected(409, "ResourceConflictsException", "%v", err)
		}
		return nil, rejected(400, "InvalidRequest", "provisioning template %s: %v", name, err)
	}
	if err := s.tokens.Delete(in.Token); err != nil {
		s.log.Warn("ownership token not deleted", zap.Error(err))
	}
	s.log.Info("thing provisioned", zap.String("eventType", "RegisterThing"), zap.String("thingName", res.ThingName),
		zap.String("principalId", res.CertificateID), zap.String("clientId", clientIDOf(m.From)), zap.String("templateName", name))
	cfg := res.DeviceConfiguration
	if cfg == nil {
		cfg = map[string]string{}
	}
	return map[string]any{"deviceConfiguration": cfg, "thingName": res.ThingName}, nil
}

// expireToken drops an expired token and, as AWS does, deletes its certificate if it was neither
// activated nor attached to a thing or policy by then (FP-API).
func (s *Service) expireToken(tok string, own ownership) {
	_ = s.tokens.Delete(tok)
	rec, _, err := s.state.Registry.Certificate(own.CertificateID)
	if err != nil || rec == nil || rec.Status != auth.StatusPendingActivation || len(rec.Things) > 0 || len(rec.Policies) > 0 {
		return
	}
	if err := s.state.Registry.DeleteCertificate(rec.ID, false); err != nil {
		s.log.Warn("unclaimed certificate not deleted", zap.String("principalId", rec.ID), zap.Error(err))
		return
	}
	s.log.Info("unclaimed certificate deleted: its ownership token expired", zap.String("principalId", rec.ID))
}

// sweepTokens expires ownership tokens; it checks every minute (or every validity, if shorter).
func (s *Service) sweepTokens(ctx context.Context) {
	t := time.NewTicker(min(time.Minute, s.cfg.OwnershipTokenValidity))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			type expired struct {
				tok string
				own ownership
			}
			var list []expired
			_ = s.tokens.ForEach("", func(k string, v []byte) error {
				var own ownership
				if json.Unmarshal(v, &own) == nil && now.After(own.Expires) {
					list = append(list, expired{k, own})
				}
				return nil
			})
			for _, e := range list {
				s.expireToken(e.tok, e.own)
			}
		}
	}
}
