package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newCACommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show the core device CA"}
	var device bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the core device CA certificate (PEM, on stdout) and where it lives (on stderr)",
		Long: `Print the core device CA certificate, the CA that client devices use to verify the broker, as PEM on
stdout, and its path and fingerprint on stderr, so that "ggbroker ca show > core-ca.pem" writes a clean file.
With --device, print the device CA instead (the CA that signs device certificates).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := openState(g)
			if err != nil {
				return err
			}
			ca, path := st.CoreCA, st.CoreCAPath
			if device {
				ca, path = st.DeviceCA, st.Dir+"/ca/device-ca.pem"
			}
			fmt.Fprintf(os.Stderr, "# %s\n# subject %s, SHA-256 %s, valid until %s\n", path, ca.Cert.Subject, ca.Fingerprint(), ca.Cert.NotAfter.UTC().Format("2006-01-02"))
			_, err = cmd.OutOrStdout().Write(ca.CertPEM())
			return err
		},
	}
	show.Flags().BoolVar(&device, "device", false, "show the device CA instead of the core device CA")
	cmd.AddCommand(show)
	return cmd
}
