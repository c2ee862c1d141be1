package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/config"
)

// globalFlags are the flags every command has; each maps to a config key.
type globalFlags struct {
	configFile string
	bound      map[string]*pflag.Flag // config key -> flag
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{bound: map[string]*pflag.Flag{}}
	root := &cobra.Command{
		Use:   "ggbroker",
		Short: "An offline AWS IoT Greengrass V2 core device for MQTT client devices",
		Long: `ggbroker is an MQTT broker (MQTT 3.1.1 and 5) that behaves, for client devices, like the local broker of an
AWS IoT Greengrass V2 core device: devices connect over mutual TLS with X.509 certificates, the client ID is
the thing name, and a local core device CA issues the broker's 7-day server certificate and rotates it.

Quick start (two devices: one client ID per connection). A device's default policy allows its own
THING/... topics only; sensor-1 reads the others' temperature through the policy in the repository's
examples/policies/temperature-reader.json:
  ggbroker serve                                          # embedded defaults, no config file needed
  ggbroker policy create temperature-reader examples/policies/temperature-reader.json
  ggbroker device create sensor-1 --out ./devices/sensor-1 --policy temperature-reader
  ggbroker device create sensor-2 --out ./devices/sensor-2
  mosquitto_sub --cafile devices/sensor-1/core-ca.pem --cert devices/sensor-1/device.pem.crt \
    --key devices/sensor-1/private.pem.key -i sensor-1 -h localhost -p 8883 -t '+/temperature' -v
  mosquitto_pub --cafile devices/sensor-2/core-ca.pem --cert devices/sensor-2/device.pem.crt \
    --key devices/sensor-2/private.pem.key -i sensor-2 -h localhost -p 8883 -t sensor-2/temperature -m 21.5

Configuration comes from the embedded defaults, a YAML file (--config), GGBROKER_* environment variables
(GGBROKER_MQTT_LISTEN=":18883" sets mqtt.listen) and flags, each overriding the one before.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configFile, "config", "c", "", "YAML config file, merged over the embedded defaults (see configs/ggbroker.yaml)")
	g.bind(pf, "stateDir", "state-dir", "", "state directory: CAs, server certificate, registry (default ./ggbroker-data)")
	g.bind(pf, "log.level", "log-level", "", "log level: debug, info, warn, error (default info)")
	g.bind(pf, "log.format", "log-format", "", "log format: auto, json, console (default auto: console on a terminal)")

	root.AddCommand(newServeCommand(g), newDeviceCommand(g), newCACommand(g), newPolicyCommand(g), newVersionCommand())
	root.AddCommand(newDiscoverCommand(g))
	root.AddCommand(newHealthCommand(g))
	root.AddCommand(newAdvisorCommand(g))
	root.AddCommand(newAuditCommand(g))
	root.AddCommand(newBridgeCommand(g))
	root.AddCommand(newJobCommand(g))
	root.AddCommand(newShadowCommand(g))
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group (device, policy ...) refuse a subcommand it does
// not have. cobra checks unknown commands only at the root: `ggbroker device crate x` printed the
// device help and exited 0, so a script with a typo went on as if the device had been created.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		refuseUnknownSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return &exitError{code: 2, err: fmt.Errorf("%s; run '%s --help' for its commands", msg, c.CommandPath())}
	}
}

// bind declares a string flag bound to a config key. Its default is empty: an unset flag never
// overrides the file or the environment.
func (g *globalFlags) bind(fs *pflag.FlagSet, key, name, short, usage string) {
	if short != "" {
		fs.StringP(name, short, "", usage)
	} else {
		fs.String(name, "", usage)
	}
	g.bound[key] = fs.Lookup(name)
}

// bindSlice declares a repeatable string flag bound to a list config key.
func (g *globalFlags) bindSlice(fs *pflag.FlagSet, key, name, usage string) {
	fs.StringSlice(name, nil, usage)
	g.bound[key] = fs.Lookup(name)
}

// load reads the configuration with the flags that were set on this command line.
func (g *globalFlags) load() (*config.Config, error) {
	set := map[string]*pflag.Flag{}
	for key, f := range g.bound {
		if f.Changed {
			set[key] = f
		}
	}
	return app.LoadConfig(g.configFile, set)
}

// newLogger builds the process logger: JSON when stderr is not a terminal (containers, journald),
// console otherwise, unless log.format says which.
func newLogger(cfg *config.Config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.Log.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	format := cfg.Log.Format
	if format == "auto" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "console"
		}
	}
	zc := zap.NewProductionConfig()
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil // every connect, disconnect and refusal is one record: never drop them
	zc.EncoderConfig.TimeKey = "timestamp"
	zc.EncoderConfig.LevelKey = "logLevel"
	zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	zc.DisableStacktrace = true
	return zc.Build()
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rev := commit
			if rev == "" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							rev = s.Value
						}
					}
				}
			}
			if rev == "" {
				rev = "unknown"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ggbroker %s (commit %s, %s, %s/%s)\n", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
