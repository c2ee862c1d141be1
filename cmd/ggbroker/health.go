package main

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCommand asks the admin listener's /readyz, for the container image's HEALTHCHECK: the image
// is distroless, with no curl or wget.
func newHealthCommand(g *globalFlags) *cobra.Command {
	var timeout time.Duration
	var addr string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask the running broker whether it is ready (admin /readyz); exit status 0 if it is",
		Long: `Ask the running broker's admin listener (admin.listen, default 127.0.0.1:9883) for GET /readyz and print
the answer. Exit status 0 when ready (listeners serving, core device CA and server certificate valid for
more than an hour), 1 otherwise. The Dockerfile's HEALTHCHECK runs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			if !cfg.Admin.Enabled {
				return fmt.Errorf("admin.enabled is false: there is no /readyz to ask")
			}
			if addr == "" {
				addr = cfg.Admin.Listen
			}
			client := &http.Client{Timeout: timeout}
			resp, err := client.Get("http://" + addr + "/readyz")
			if err != nil {
				return fmt.Errorf("not healthy: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			fmt.Fprint(cmd.OutOrStdout(), string(body))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s", resp.Status)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	// Not bound to admin.listen through g.bind: the serve command's flag of that name is.
	cmd.Flags().StringVar(&addr, "admin-listen", "", "admin HTTP address to ask (default: admin.listen, 127.0.0.1:9883)")
	return cmd
}
