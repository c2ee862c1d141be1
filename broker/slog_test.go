package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestMochiRecordsCarryNoPayload: mochi logs whole packets when it refuses one ("error processing
// packet", "pk", pk); the records ggbroker writes for them carry a summary of the packet, never its
// payload, and stay bounded (issue 18: one 177,553-character line for an oversized MQTT 5 publish).
func TestMochiRecordsCarryNoPayload(t *testing.T) {
	var out bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&out), zapcore.DebugLevel))
	sl := slog.New(newSlogHandler(log))

	payload := strings.Repeat("SECRET-PAYLOAD-", 12000) // 180,000 bytes
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "sensor-1/big", PacketID: 7, Payload: []byte(payload), ProtocolVersion: 5,
		Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: payload}}},
	}
	cases := []struct {
		name string
		log  func()
		want []string
	}{
		{"packet value", func() {
			sl.Warn("error processing packet", "error", errors.New("packet too large"), "client", "sensor-1", "listener", "mqtts", "pk", pk)
		}, []string{`"type":"Publish"`, `"packetId":7`, `"topicName":"sensor-1/big"`, `"payloadBytes":180000`, `"error":"packet too large"`}},
		{"packet pointer", func() { sl.Debug("failed publishing packet", "packet", &pk) }, []string{`"payloadBytes":180000`}},
		{"raw bytes", func() { sl.Warn("x", "data", pk.Payload) }, []string{`"dataBytes":180000`}},
		{"long string", func() { sl.Warn("x", "error", payload) }, []string{"(180000 bytes)"}},
		{"long error", func() { sl.Error("x", "error", errors.New(payload)) }, []string{"(180000 bytes)"}},
		{"other values", func() { sl.Warn("x", "properties", pk.Properties) }, []string{"bytes)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out.Reset()
			tc.log()
			line := out.String()
			if strings.Count(line, "SECRET-PAYLOAD-") > 512/len("SECRET-PAYLOAD-")+1 {
				t.Fatalf("the record carries the payload: %d bytes", len(line))
			}
			if len(line) > 2048 {
				t.Fatalf("record of %d bytes: %.300s", len(line), line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("record lacks %s: %s", w, line)
				}
			}
		})
	}
	out.Reset()
	sl.Warn("error processing packet", "pk", pk)
	if strings.Contains(out.String(), "SECRET") {
		t.Fatalf("a packet summary carries payload text: %s", out.String())
	}
}
