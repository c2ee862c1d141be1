package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/bridge"
)

// newBridgeCommand groups the MQTT bridge's commands.
func newBridgeCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "The MQTT bridge to AWS IoT Core or another broker (core.iotDataEndpoint, bridge.mqttTopicMapping)",
	}
	cmd.AddCommand(newBridgeStatusCommand(g))
	return cmd
}

// newBridgeStatusCommand prints the state the running broker's bridge last wrote to
// <stateDir>/bridge-status.json (about once a second while it changes).
func newBridgeStatusCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the bridge's upstream connection, spool and counters",
		Long: `Show what the bridge of the broker using this state directory last reported: whether it is connected to
the upstream (core.iotDataEndpoint) and with which protocol, the last connection error, the messages
waiting in the on-disk spool, and the messages forwarded and dropped since the broker started. The
broker writes <stateDir>/bridge-status.json about once a second while something changes; the same
figures are on /metrics (ggbroker_bridge_*). Exit status 1 when the bridge is not connected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			st, err := bridge.ReadStatus(cfg.StateDir)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no bridge status in %s: no broker has run a bridge with this state directory (core.iotDataEndpoint and bridge.mqttTopicMapping are empty?)", cfg.StateDir)
			}
			if err != nil {
				return err
			}
			if st.Running && !alive(st.PID) {
				st.Running, st.Connected = false, false
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else {
				printBridgeStatus(out, st)
			}
			if !st.Connected {
				return errors.New("bridge not connected")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printBridgeStatus(w io.Writer, st *bridge.Status) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), time.Since(t).Round(time.Second))
	}
	state := "not running"
	switch {
	case st.Running && st.Endpoint == "":
		state = "running, no upstream (core.iotDataEndpoint is empty)"
	case st.Running && st.Connected:
		state = "connected (" + st.Protocol + ")"
	case st.Running:
		state = "disconnected, retrying"
	}
	fmt.Fprintf(w, "bridge:        %s, since %s\n", state, ago(st.Since))
	if st.Endpoint != "" {
		fmt.Fprintf(w, "upstream:      %s as %s\n", st.Endpoint, st.ClientID)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "last error:    %s, %s\n", st.LastError, ago(st.LastErrorAt))
	}
	fmt.Fprintf(w, "spool:         %d messages, %d bytes\n", st.SpoolMessages, st.SpoolBytes)
	fmt.Fprintf(w, "forwarded:     %d to upstream, %d from upstream, %d local\n", st.Forwarded.ToUpstream, st.Forwarded.FromUpstream, st.Forwarded.Local)
	fmt.Fprintf(w, "dropped:       %d\n", st.Dropped)
	fmt.Fprintf(w, "mappings:      %s\n", strings.Join(append([]string{fmt.Sprint(len(st.Mappings))}, st.Mappings...), "\n               "))
	fmt.Fprintf(w, "reported:      %s by pid %d\n", ago(st.Updated), st.PID)
}

// alive reports whether a process with the pid exists (signal 0 checks without signalling).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
