package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/broker"
)

func newServeCommand(g *globalFlags) *cobra.Command {
	var recoverState bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `Run the MQTT broker on the mutual TLS listener (default :8883) until SIGINT or SIGTERM, then shut down
gracefully. On first start it creates the core device CA, the device CA and the registry in the state
directory. SIGUSR1 (or POST http://127.0.0.1:9883/rotate with the bearer token in <stateDir>/admin.token) rotates the
server certificate now.

Sessions, queued QoS 1/2 messages and retained messages are kept in <stateDir>/sessions.db. If that file
is unreadable the broker refuses to start and says so; --recover moves it aside and starts empty.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			log, err := newLogger(cfg)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // nothing useful to do if stderr is gone
			var opts []broker.Option
			if recoverState {
				opts = append(opts, broker.WithRecover())
			}
			b, err := app.New(cfg, log, opts...)
			if err != nil {
				log.Error("cannot start", zap.Error(err))
				return &exitError{code: 1, err: err, logged: true}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Registered before Run reports ready: an unhandled SIGUSR1 would kill the process.
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			go rotateOnSignal(ctx, usr1, b, log)
			if err := b.Run(ctx); err != nil {
				log.Error("cannot start", zap.Error(err))
				return &exitError{code: 1, err: err, logged: true}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&recoverState, "recover", false, "if the persistence file is unreadable, move it aside (renamed with a timestamp) and start with no stored sessions")
	g.bind(fs, "mqtt.listen", "listen", "", "MQTT over TLS listen address (default :8883)")
	g.bind(fs, "admin.listen", "admin-listen", "", "admin HTTP listen address, loopback only (default 127.0.0.1:9883)")
	g.bind(fs, "discovery.listen", "discovery-listen", "", "Greengrass discovery HTTPS listen address (default :8443)")
	g.bind(fs, "behaviour.profile", "profile", "", "AWS behaviour: greengrass (a core device's local broker, default) or iot-core (AWS IoT Core's limits)")
	g.bind(fs, "clientDeviceAuth.certificates.rotationMode", "rotation-mode", "", "hot (no client disconnected) or restart (disconnect every client, as Greengrass does)")
	g.bindSlice(fs, "connectivity.hostAddresses", "host", "host name or IP clients use, added to the server certificate (repeatable)")
	return cmd
}

// rotateOnSignal rotates the server certificate on every signal received on ch (SIGUSR1).
func rotateOnSignal(ctx context.Context, ch <-chan os.Signal, b *broker.Broker, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if err := b.Rotate("forced"); err != nil {
				log.Error("rotation on SIGUSR1 failed", zap.Error(err))
			}
		}
	}
}
