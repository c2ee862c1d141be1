package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/state"
)

func newDeviceCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Create, register, list, revoke and deactivate client devices (things and their certificates)",
		Long: `Manage the registry of things and device certificates in the state directory. A running broker sees
every change from the next connect on: no restart is needed.`,
	}
	cmd.AddCommand(newDeviceCreateCommand(g), newDeviceAddCertCommand(g), newDeviceRegisterCommand(g), newDeviceListCommand(g),
		newDeviceStatusCommand(g, "revoke", auth.StatusRevoked, "Revoke a device's certificate(s): they are refused from the next connect on"),
		newDeviceStatusCommand(g, "deactivate", auth.StatusInactive, "Deactivate a device's certificate(s) (INACTIVE): refused until activated again"),
		newDeviceStatusCommand(g, "activate", auth.StatusActive, "Activate a device's certificate(s) again (ACTIVE)"))
	return cmd
}

// openState loads the config and opens the state directory, for the commands that do not serve.
func openState(g *globalFlags) (*state.State, *configView, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	st, err := state.OpenState(cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range st.Notes {
		fmt.Fprintln(os.Stderr, "ggbroker:", n)
	}
	for _, w := range st.Warnings {
		fmt.Fprintln(os.Stderr, "ggbroker: warning:", w)
	}
	kt, err := certs.ParseKeyType(cfg.Devices.KeyType)
	if err != nil {
		return nil, nil, fmt.Errorf("devices.keyType: %w", err)
	}
	return st, &configView{deviceKeyType: kt, deviceValidity: time.Duration(cfg.Devices.CertificateValidityDays) * 24 * time.Hour}, nil
}

// configView is the part of the config the device commands use.
type configView struct {
	deviceKeyType  certs.KeyType
	deviceValidity time.Duration
}

// thingFlags are the thing attributes `create` and `register` take.
type thingFlags struct {
	attrs    []string
	typeName string
}

func (t *thingFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&t.attrs, "attr", nil, "thing attribute key=value (repeatable)")
	cmd.Flags().StringVar(&t.typeName, "type", "", "thing type name")
}

func (t *thingFlags) thing(name string) (auth.Thing, error) {
	th := auth.Thing{Name: name, TypeName: t.typeName}
	for _, kv := range t.attrs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return th, fmt.Errorf("--attr %q: want key=value", kv)
		}
		if th.Attributes == nil {
			th.Attributes = map[string]string{}
		}
		th.Attributes[k] = v
	}
	if err := auth.CheckAttributes(th.Attributes); err != nil {
		return th, fmt.Errorf("--attr: %w", err)
	}
	return th, nil
}

func newDeviceCreateCommand(g *globalFlags) *cobra.Command {
	var tf thingFlags
	var out string
	var policies []string
	var force bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Make a key and certificate for a new device, register it, and write its files",
		Long: `Make a key and a certificate signed by the local device CA, write into --out:
  device.pem.crt   the device certificate
  private.pem.key  its private key (mode 0600)
  core-ca.pem      the core device CA, which the device uses to verify the broker
and then register the thing NAME and the certificate (ACTIVE, attached to NAME, with the --policy policies
or else the default device policy). The device connects with client ID NAME. The default device policy
allows it its own topics NAME/..., its own shadow and jobs, and nothing of another device's: give a device
that must reach other devices' topics a policy of its own with --policy (see 'ggbroker policy create').

A thing that exists is refused: use 'ggbroker device add-cert NAME' to give it another certificate, or
--force to register it again with a new one. Files are never overwritten: if --out holds any of the three,
nothing is written and nothing is registered.`,
		Example: `  ggbroker device create sensor-1 --out ./devices/sensor-1 --attr floor=2 --type TempSensor`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			thing, err := tf.thing(name)
			if err != nil {
				return err
			}
			st, cv, err := openState(g)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join("devices", name)
			}
			existing := auth.RefuseExisting
			if force {
				existing = auth.ReplaceExisting
			}
			dev, dir, err := st.ProvisionDevice(auth.NewDevice{Thing: thing, KeyType: cv.deviceKeyType, Validity: cv.deviceValidity, Policies: policies},
				existing, func(string) string { return out })
			if err != nil {
				return err
			}
			printProvisioned(cmd, "created thing "+name, dev, dir)
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "directory to write the device's files into (default ./devices/NAME)")
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "attach this policy (repeatable; default: authorization.defaultDevicePolicy)")
	cmd.Flags().BoolVar(&force, "force", false, "register NAME again if it exists, with a new certificate (its other certificates stay ACTIVE)")
	return cmd
}

func newDeviceAddCertCommand(g *globalFlags) *cobra.Command {
	var out string
	var policies []string
	cmd := &cobra.Command{
		Use:   "add-cert THING",
		Short: "Give a registered thing one more certificate (a new key), and write its files",
		Long: `Make a key and a certificate signed by the local device CA for the registered thing THING, write
device.pem.crt, private.pem.key (0600) and core-ca.pem into --out (never overwriting a file), then register
the certificate, ACTIVE and attached to THING, with the --policy policies or else the policies of THING's
other certificates. The thing's other certificates are not changed: revoke an old one with
'ggbroker device revoke CERTIFICATE_ID' once the device uses the new one.`,
		Example: `  ggbroker device add-cert sensor-1 --out ./devices/sensor-1-new`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			st, cv, err := openState(g)
			if err != nil {
				return err
			}
			dirFor := func(id string) string {
				if out != "" {
					return out
				}
				return filepath.Join("devices", name+"-"+id[:8])
			}
			dev, dir, err := st.ProvisionDevice(auth.NewDevice{Thing: auth.Thing{Name: name}, KeyType: cv.deviceKeyType, Validity: cv.deviceValidity, Policies: policies},
				auth.RequireExisting, dirFor)
			if err != nil {
				return err
			}
			printProvisioned(cmd, "added a certificate to thing "+name, dev, dir)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "directory to write the files into (default ./devices/THING-<first 8 characters of the certificate ID>)")
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "attach this policy (repeatable; default: the policies of the thing's other certificates)")
	return cmd
}

func printProvisioned(cmd *cobra.Command, what string, dev *auth.Device, dir string) {
	fmt.Fprintf(cmd.OutOrStdout(), "%s\n  certificate %s (ACTIVE), policies %s\n  files in %s: %s, %s (0600), %s\n",
		what, dev.Certificate.ID, strings.Join(dev.Certificate.Policies, ", "), dir, auth.DeviceCertFile, auth.DeviceKeyFile, auth.CoreCAFile)
}

func newDeviceRegisterCommand(g *globalFlags) *cobra.Command {
	var tf thingFlags
	var certFile string
	var policies []string
	cmd := &cobra.Command{
		Use:   "register NAME --cert FILE",
		Short: "Register an existing device certificate (from a trusted CA, or self-signed) for thing NAME",
		Long: `Register the certificate in --cert (issued by a CA in devices.trustedCAs, or self-signed, as AWS IoT
allows) for the thing NAME: ACTIVE, attached to NAME, with the --policy policies or else the default device
policy (authorization.defaultDevicePolicy), as 'device create' does. Without a policy the device would be
refused at CONNECT.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			thing, err := tf.thing(args[0])
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(certFile)
			if err != nil {
				return fmt.Errorf("--cert: %w", err)
			}
			parsed, err := certs.ParseCertsPEM(raw)
			if err != nil {
				return fmt.Errorf("--cert %s: %w", certFile, err)
			}
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			rec, err := st.RegisterDevice(thing, parsed[0], policies)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered certificate %s (ACTIVE) for thing %s, policies %s\n", rec.ID, args[0], strings.Join(rec.Policies, ", "))
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file of the device certificate")
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "attach this policy (repeatable; default: authorization.defaultDevicePolicy)")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

func newDeviceListCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registered things and their certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			things, err := st.Registry.Things()
			if err != nil {
				return err
			}
			type row struct {
				*auth.Thing
				Certificates []*auth.Certificate `json:"certificates"`
			}
			rows := make([]row, 0, len(things))
			for _, t := range things {
				cs, err := st.Registry.CertificatesOf(t.Name)
				if err != nil {
					return err
				}
				rows = append(rows, row{Thing: t, Certificates: cs})
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "THING\tTYPE\tCERTIFICATE\tSTATUS\tATTRIBUTES")
			for _, r := range rows {
				attrs := make([]string, 0, len(r.Attributes))
				for k, v := range r.Attributes {
					attrs = append(attrs, k+"="+v)
				}
				sort.Strings(attrs)
				if len(r.Certificates) == 0 {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\t%s\n", r.Name, r.TypeName, strings.Join(attrs, ","))
				}
				for _, c := range r.Certificates {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.TypeName, c.ID, c.Status, strings.Join(attrs, ","))
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDeviceStatusCommand(g *globalFlags, verb string, status auth.Status, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " THING|CERTIFICATE_ID",
		Short: short,
		Long:  short + ".\nThe argument is a thing name (all its certificates) or a certificate ID (or a unique prefix of 8+ characters).",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			ids, err := st.Registry.SetStatus(args[0], status)
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(cmd.OutOrStdout(), "certificate %s is now %s\n", id, status)
			}
			return nil
		},
	}
}
