package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/audit"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

func newAuditCommand(g *globalFlags) *cobra.Command {
	var (
		jsonOut  bool
		failOn   string
		records  []string
		since    time.Duration
		expiring time.Duration
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Audit the registry, the policies and the connection records the way AWS IoT Device Defender does",
		Long: `Run Device Defender's audit checks, with their names and severities, over the state directory: the
registry of things and certificates, the policy documents, the CAs, and (with --records) the broker's
connection records. Every finding names the resource and says how to fix it.

Connection records are the JSON log lines ` + "`ggbroker serve --log-format json`" + ` writes to stderr (for example
` + "`ggbroker serve --log-format json 2>>broker.log`" + `, or journalctl -o cat): --records FILE, repeatable, "-" for
stdin. CONFLICTING_CLIENT_IDS_CHECK reads their DUPLICATE_CLIENT_ID disconnections, DEVICE_CERTIFICATE_SHARED_CHECK
and REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK their connections; without records the first is NOT_RUN.

Exit status: 1 when a finding is at or above --fail-on (default high), 2 when the audit could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			usage := func(err error) error { return &exitError{code: 2, err: err} }
			threshold, err := audit.ParseSeverity(failOn)
			if err != nil {
				return usage(fmt.Errorf("--fail-on: %w", err))
			}
			in, err := auditInput(g, records, cmd.InOrStdin())
			if err != nil {
				return usage(err)
			}
			in.Since, in.ExpiringWithin = since, expiring
			rep, err := audit.Run(*in)
			if err != nil {
				return usage(err)
			}
			if jsonOut {
				err = rep.WriteJSON(cmd.OutOrStdout())
			} else {
				err = rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if rep.FailsAt(threshold) {
				return &exitError{code: 1, err: fmt.Errorf("audit: %s finding(s) at or above %s", rep.Worst(), threshold)}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON")
	fs.StringVar(&failOn, "fail-on", "high", "exit 1 when a finding is at or above this severity: critical, high, medium or low")
	fs.StringArrayVar(&records, "records", nil, `broker JSON log file with the connection records (repeatable; "-" for stdin)`)
	fs.DurationVar(&since, "since", 31*24*time.Hour, "how far back connection records are read (Device Defender's on-demand audit: 31 days)")
	fs.DurationVar(&expiring, "expiring-within", 30*24*time.Hour, "window of the certificate expiring checks (Device Defender: 30 days)")
	return cmd
}

// auditInput gathers what the audit reads from the state directory and the record files.
func auditInput(g *globalFlags, recordFiles []string, stdin io.Reader) (*audit.Input, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	st, err := state.OpenState(cfg)
	if err != nil {
		return nil, err
	}
	data, err := st.Registry.Snapshot()
	if err != nil {
		return nil, err
	}
	in := &audit.Input{Registry: data, Env: policy.Env{Region: cfg.Core.Region, AccountID: cfg.Core.AccountID}}
	entries, err := os.ReadDir(st.PolicyDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("policy directory %s: %w", st.PolicyDir, err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(st.PolicyDir, e.Name()))
		if err != nil {
			return nil, err
		}
		in.Policies = append(in.Policies, audit.PolicyDoc{Name: strings.TrimSuffix(e.Name(), ".json"), Raw: raw})
	}
	in.CAs = append(in.CAs, audit.CA{Name: "core device CA " + st.CoreCAPath, Cert: st.CoreCA.Cert})
	for _, c := range st.CoreCA.Chain {
		in.CAs = append(in.CAs, audit.CA{Name: "core device CA chain " + c.Subject.CommonName, Cert: c})
	}
	in.CAs = append(in.CAs, audit.CA{Name: "device CA " + filepath.Join(st.Dir, "ca", "device-ca.pem"), Cert: st.DeviceCA.Cert})
	for i, path := range cfg.Devices.TrustedCAs {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("devices.trustedCAs[%d]: %w", i, err)
		}
		cas, err := certs.ParseCertsPEM(raw)
		if err != nil {
			return nil, fmt.Errorf("devices.trustedCAs[%d] %s: %w", i, path, err)
		}
		for _, c := range cas {
			in.CAs = append(in.CAs, audit.CA{Name: "trusted CA " + path, Cert: c})
		}
	}
	if len(recordFiles) > 0 {
		in.Records = []audit.Record{}
	}
	for _, path := range recordFiles {
		var r io.Reader = stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("--records: %w", err)
			}
			defer f.Close()
			r = f
		}
		recs, _, err := audit.ReadRecords(r)
		if err != nil {
			return nil, fmt.Errorf("--records %s: %w", path, err)
		}
		in.Records = append(in.Records, recs...)
	}
	return in, nil
}
