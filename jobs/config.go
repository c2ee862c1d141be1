package jobs

import (
	_ "embed"
	"fmt"
	"time"

	"github.com/ggbroker/ggbroker/config"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Section is the jobs block of the configuration, with its documented defaults, so that
// GGBROKER_JOBS_... environment variables override it like any broker key.
var Section = config.Section{Key: "jobs", Defaults: defaultsYAML}

// Config is the jobs block.
type Config struct {
	Enabled bool `mapstructure:"enabled"`
	// TimeoutMinute is the length of one minute of the timeouts AWS counts in minutes.
	TimeoutMinute time.Duration `mapstructure:"timeoutMinute"`
}

func defaultConfig() Config { return Config{Enabled: true, TimeoutMinute: time.Minute} }

func (c Config) validate() error {
	if c.TimeoutMinute <= 0 {
		return fmt.Errorf("jobs.timeoutMinute: %s is not a positive duration", c.TimeoutMinute)
	}
	return nil
}
