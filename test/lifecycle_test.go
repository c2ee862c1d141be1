package test

import (
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/config"
)

// TestOneBrokerPerStateDirectory: a second broker on a state directory another one serves is refused
// with a clear message, with persistence on and off; Close releases everything New took (twice is
// fine), so a new broker can take the directory and the port.
func TestOneBrokerPerStateDirectory(t *testing.T) {
	for _, persist := range []bool{true, false} {
		h := startBroker(t, func(c *config.Config) { c.Persistence.Enabled = persist })
		cfg := *h.cfg
		cfg.MQTT.Listen, cfg.Admin.Listen, cfg.Discovery.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		if _, err := app.New(&cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "in use by another ggbroker serve") {
			t.Fatalf("persistence %v: second broker on %s: %v", persist, cfg.StateDir, err)
		}
		h.stop()
		b, err := app.New(h.cfg, zap.NewNop()) // the directory is free again
		if err != nil {
			t.Fatalf("persistence %v: after the first stopped: %v", persist, err)
		}
		b.Close()
		b.Close()
		b, err = app.New(h.cfg, zap.NewNop())
		if err != nil {
			t.Fatalf("persistence %v: after Close: %v", persist, err)
		}
		b.Close()
	}
}
