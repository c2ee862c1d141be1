package iotapi

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/service"
)

// sendHost is a Host that records SendTo only (the rest of the seam is not used here).
type sendHost struct {
	service.Host
	sent chan service.Message
}

func (h *sendHost) SendTo(_ *service.Client, m service.Message, _ service.SendOptions) error {
	h.sent <- m
	return nil
}

func TestFleetRequestsAreThrottled(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := &sendHost{sent: make(chan service.Message, 1)}
	s := &Service{log: zap.NewNop(), host: h, metrics: m, fleetSlots: make(chan struct{}, 1)}
	s.fleetSlots <- struct{}{} // the one slot is busy
	called := false
	handler := s.fleetHandler(func(*service.Message, string) (any, error) { called = true; return nil, nil })
	err = handler(context.Background(), &service.Message{Topic: "$aws/certificates/create/json", From: &service.Client{ClientID: "c"}})
	if !errors.Is(err, service.Consumed) {
		t.Fatalf("handler: %v, want Consumed", err)
	}
	s.wg.Wait()
	got := <-h.sent
	var body fleetError
	if err := json.Unmarshal(got.Payload, &body); err != nil || got.Topic != "$aws/certificates/create/json/rejected" || body.StatusCode != 429 || body.ErrorCode != "ThrottlingException" {
		t.Fatalf("answer %s %s", got.Topic, got.Payload)
	}
	if called {
		t.Fatal("a throttled request was worked on")
	}
}
