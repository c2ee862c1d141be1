package broker

import (
	"context"
	"fmt"
	"log/slog"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogHandler sends mochi's log/slog records to zap, so the process writes one log format.
type slogHandler struct {
	log    *zap.Logger
	fields []zap.Field
}

func newSlogHandler(log *zap.Logger) *slogHandler { return &slogHandler{log: log} }

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

// perMessage are mochi's records that it writes once per message on overload (a slow subscriber's
// full queue, exhausted packet IDs, a failed delivery: a QoS 1 overload run wrote 27,000 in 3 seconds). At warn level they would flood the log and
// slow the broker exactly when it is busiest; they are kept at debug, and the drops are counted in the
// metrics instead.
var perMessage = map[string]bool{
	"client store quota reached": true,
	"packet ids exhausted":       true,
	"failed publishing packet":   true,
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	level := zapLevel(r.Level)
	if perMessage[r.Message] {
		level = zapcore.DebugLevel
	}
	ce := h.log.Check(level, r.Message)
	if ce == nil {
		return nil
	}
	fields := append([]zap.Field(nil), h.fields...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, boundedField(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogHandler{log: h.log, fields: append([]zap.Field(nil), h.fields...)}
	for _, a := range attrs {
		n.fields = append(n.fields, boundedField(a))
	}
	return n
}

// maxAttrBytes bounds the text of one attribute of a mochi record.
const maxAttrBytes = 512

// boundedField turns one of mochi's slog attributes into a zap field that carries no payload and stays
// small. mochi logs whole packets on errors ("error processing packet", "pk", pk): an MQTT 5 refusal of
// an oversized PUBLISH wrote its payload into one 177,553-character line. A packet becomes a summary
// (type, packet ID, topic, QoS, payload size); other values are cut at maxAttrBytes.
func boundedField(a slog.Attr) zap.Field {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return zap.String(a.Key, truncate(v.String()))
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration, slog.KindTime:
		return zap.Any(a.Key, v.Any())
	}
	switch x := v.Any().(type) {
	case packets.Packet:
		return zap.Object(a.Key, packetSummary{&x})
	case *packets.Packet:
		if x == nil {
			return zap.Skip()
		}
		return zap.Object(a.Key, packetSummary{x})
	case []byte:
		return zap.Int(a.Key+"Bytes", len(x))
	case error:
		return zap.String(a.Key, truncate(x.Error()))
	case nil:
		return zap.Skip()
	default:
		return zap.String(a.Key, truncate(fmt.Sprint(x)))
	}
}

// truncate cuts s to maxAttrBytes (on a rune boundary), saying how long it was.
func truncate(s string) string {
	if len(s) <= maxAttrBytes {
		return s
	}
	cut := maxAttrBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes)", len(s))
}

// packetSummary logs what identifies a packet and never its payload or properties' contents.
type packetSummary struct{ pk *packets.Packet }

func (p packetSummary) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	pk := p.pk
	enc.AddString("type", packets.PacketNames[pk.FixedHeader.Type])
	if pk.PacketID != 0 {
		enc.AddUint16("packetId", pk.PacketID)
	}
	if pk.TopicName != "" {
		enc.AddString("topicName", truncate(pk.TopicName))
	}
	if pk.FixedHeader.Type == packets.Publish {
		enc.AddUint8("qos", pk.FixedHeader.Qos)
		enc.AddBool("retain", pk.FixedHeader.Retain)
		enc.AddInt("payloadBytes", len(pk.Payload))
	}
	if n := len(pk.Filters); n > 0 {
		enc.AddInt("filters", n)
	}
	if pk.ProtocolVersion != 0 {
		enc.AddUint8("protocolVersion", pk.ProtocolVersion)
	}
	return nil
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{log: h.log.Named(name), fields: h.fields}
}

// zapLevel maps slog levels onto zap's. mochi logs routine events at Info (server starting, clients
// taking over); they are demoted to Debug so ggbroker's own records are what an operator sees.
func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	default:
		return zapcore.DebugLevel
	}
}
