// Package app assembles one ggbroker process: every device service's config section and constructor,
// and the broker that hosts them. cmd/ggbroker and the end-to-end tests both build the broker here, so
// they run the same services.
package app

import (
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/bridge"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/iotapi"
	"github.com/ggbroker/ggbroker/jobs"
	"github.com/ggbroker/ggbroker/shadow"
)

// Sections are the config blocks the services own, one service per line.
func Sections() []config.Section {
	return []config.Section{
		bridge.Section,
		shadow.Section,
		jobs.Section,
		iotapi.Section,
	}
}

// Services are the device services' constructors, in start order, one per line.
func Services() []broker.Constructor {
	return []broker.Constructor{
		bridge.New,
		shadow.New,
		jobs.New,
		iotapi.New,
	}
}

// LoadConfig loads the configuration with every service's section (see config.Load).
func LoadConfig(path string, flags map[string]*pflag.Flag) (*config.Config, error) {
	return config.Load(path, flags, Sections()...)
}

// DefaultConfig is the embedded default configuration with every service's section.
func DefaultConfig() (*config.Config, error) { return config.Default(Sections()...) }

// New makes the broker with every service (see broker.New).
func New(cfg *config.Config, log *zap.Logger, opts ...broker.Option) (*broker.Broker, error) {
	return broker.New(cfg, log, append([]broker.Option{broker.WithServices(Services()...)}, opts...)...)
}
