package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/discovery"
)

func newDiscoverCommand(g *globalFlags) *cobra.Command {
	var certFile, keyFile, caFile, endpoint, serverName string
	var alpn bool
	cmd := &cobra.Command{
		Use:   "discover THING --cert FILE --key FILE --ca FILE [--endpoint HOST:PORT]",
		Short: "Call the Greengrass discovery API as a device would, and print the answer",
		Long: `Call GET /greengrass/discover/thing/THING over mutual TLS with a device's certificate and key, verify the
discovery server with --ca (the core device CA: a device's core-ca.pem), and print the JSON answer, indented.
A refusal exits non-zero with the HTTP status and AWS' error body (403: greengrass:Discover denied; 404: the
thing is unknown, not attached to the certificate, not associated with the core, or the core has no
connectivity information); a refused certificate fails the TLS handshake, and the broker's log says why.

--endpoint defaults to localhost and the port of discovery.listen. With --alpn the client offers the ALPN
protocol x-amzn-http-ca, as the AWS IoT Device SDKs do on port 443.

Example:
  ggbroker discover sensor-1 --cert devices/sensor-1/device.pem.crt --key devices/sensor-1/private.pem.key \
    --ca devices/sensor-1/core-ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				cfg, err := g.load()
				if err != nil {
					return err
				}
				_, port, err := net.SplitHostPort(cfg.Discovery.Listen)
				if err != nil {
					return fmt.Errorf("discovery.listen %q: %w", cfg.Discovery.Listen, err)
				}
				endpoint = net.JoinHostPort("localhost", port)
			}
			body, err := discover(args[0], endpoint, serverName, certFile, keyFile, caFile, alpn)
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if err := json.Indent(&out, body, "", "  "); err != nil {
				return fmt.Errorf("discovery answered with something that is not JSON: %w\n%s", err, body)
			}
			out.WriteByte('\n')
			_, err = cmd.OutOrStdout().Write(out.Bytes())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "device certificate (PEM), e.g. device.pem.crt")
	f.StringVar(&keyFile, "key", "", "device private key (PEM), e.g. private.pem.key")
	f.StringVar(&caFile, "ca", "", "CA that verifies the discovery server (PEM): the core device CA, e.g. core-ca.pem")
	f.StringVar(&endpoint, "endpoint", "", "discovery server HOST:PORT (default localhost and the port of discovery.listen)")
	f.StringVar(&serverName, "server-name", "", "TLS server name to send and verify (default: the host of --endpoint)")
	f.BoolVar(&alpn, "alpn", false, "offer the ALPN protocol "+discovery.ALPNProtocol+", as the Device SDKs do on port 443")
	for _, name := range []string{"cert", "key", "ca"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// discover makes the device's request and returns the body of a 200 answer.
func discover(thing, endpoint, serverName, certFile, keyFile, caFile string, alpn bool) ([]byte, error) {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, fmt.Errorf("--endpoint %q is not HOST:PORT: %w", endpoint, err)
	}
	if serverName == "" {
		serverName = host
	}
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	cas, err := certs.ParseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", caFile, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}, ServerName: strings.Trim(serverName, "[]")}
	tc.RootCAs = x509.NewCertPool()
	for _, c := range cas {
		tc.RootCAs.AddCert(c)
	}
	if alpn {
		tc.NextProtos = []string{discovery.ALPNProtocol}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false}}
	u := url.URL{Scheme: "https", Host: endpoint, Path: discovery.PathPrefix + thing}
	resp, err := client.Get(u.String())
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		var verr *tls.CertificateVerificationError
		hint := "the broker refuses a device certificate it does not accept by closing the connection: its log says why"
		if errors.As(err, &verr) {
			hint = "--ca must be the core device CA (core-ca.pem) of this broker, and --server-name (or the --endpoint host) a name in the discovery certificate"
		}
		return nil, fmt.Errorf("discover %s at %s: %w (%s)", thing, endpoint, err, hint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("discover %s at %s: reading the answer: %w", thing, endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discover %s at %s: HTTP %s: %s", thing, endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
