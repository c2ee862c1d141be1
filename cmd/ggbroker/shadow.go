package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/awsapi"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/shadow"
	"github.com/ggbroker/ggbroker/state"
)

func newShadowCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shadow",
		Short: "Read and change Device Shadows (classic and named) in the state directory",
		Long: `Device Shadows live in the state directory's service database (services.db). These commands print
and take shadow documents exactly as the AWS IoT Device Shadow service does (GetThingShadow,
UpdateThingShadow, DeleteThingShadow, ListNamedShadowsForThing).

While a broker serves the state directory, they go through it: the iot-data HTTPS API on
controlPlane.listen, signed with the keys of <stateDir>/credentials, so an update publishes its
update/accepted, update/documents and update/delta to MQTT subscribers as any other. When no broker
runs, they open services.db directly, holding the state directory's serve lock meanwhile.`,
	}
	var name string
	withName := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&name, "name", "", "named shadow (default: the classic, unnamed shadow)")
		return c
	}
	cmd.AddCommand(withName(&cobra.Command{
		Use:   "get THING",
		Short: "Print a shadow document (state with delta, metadata, version)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runShadow(g, c.OutOrStdout(), "get", shadow.ID{Thing: args[0], Name: name}, nil)
		},
	}))
	var document string
	update := withName(&cobra.Command{
		Use:   "update THING",
		Short: "Update a shadow with a request document ({\"state\":{\"desired\":{...}}}) from --document or stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			raw, err := readDocument(c.InOrStdin(), document)
			if err != nil {
				return err
			}
			return runShadow(g, c.OutOrStdout(), "update", shadow.ID{Thing: args[0], Name: name}, raw)
		},
	})
	update.Flags().StringVar(&document, "document", "-", "file holding the update request document; - reads stdin")
	cmd.AddCommand(update)
	cmd.AddCommand(withName(&cobra.Command{
		Use:   "delete THING",
		Short: "Delete a shadow (its version carries on if it is created again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runShadow(g, c.OutOrStdout(), "delete", shadow.ID{Thing: args[0], Name: name}, nil)
		},
	}))
	cmd.AddCommand(&cobra.Command{
		Use:   "list THING",
		Short: "List a thing's named shadows",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runShadow(g, c.OutOrStdout(), "list", shadow.ID{Thing: args[0]}, nil)
		},
	})
	return cmd
}

// runShadow does one operation: through the running broker's iot-data API when it answers, else on
// services.db directly.
func runShadow(g *globalFlags, out io.Writer, op string, id shadow.ID, doc []byte) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	if e := id.Validate(); e != nil {
		return shadowError(op, e, nil)
	}
	if api, ok, err := dialShadowAPI(cfg); err != nil {
		return err
	} else if ok {
		return api.do(out, op, id, doc)
	}
	return runShadowDirect(cfg, out, op, id, doc)
}

// runShadowDirect does the operation on services.db, holding the serve lock so that no broker starts
// meanwhile, and refusing while one runs.
func runShadowDirect(cfg *config.Config, out io.Writer, op string, id shadow.ID, doc []byte) error {
	scfg, err := shadow.DecodeConfig(cfg)
	if err != nil {
		return err
	}
	lock, err := state.LockServe(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("%w\n(a running broker is reached through its iot-data API on controlPlane.listen, which did not answer)", err)
	}
	defer lock.Release()
	st, closeDB, err := broker.OpenServiceStore(cfg.StateDir, shadow.Bucket)
	if err != nil {
		return err
	}
	defer closeDB()
	s := shadow.NewShadows(st, shadow.Limits{DocumentSize: scfg.DocumentSizeLimitBytes}, nil)
	switch op {
	case "get":
		d, e, err := s.Get(id)
		if e != nil {
			return shadowError(op, e, err)
		}
		return printJSON(out, shadow.GetResponse(d, s.Now(), "", false))
	case "update":
		req, e := shadow.ParseUpdate(doc)
		if e != nil {
			return shadowError(op, e, nil)
		}
		u, e, err := s.Update(id, req, nil)
		if e != nil {
			return shadowError(op, e, err)
		}
		return printJSON(out, u.Accepted)
	case "delete":
		v, e, err := s.Delete(id, nil)
		if e != nil {
			return shadowError(op, e, err)
		}
		return printJSON(out, shadow.DeleteResponse(v, s.Now(), "", false))
	default:
		names, _, err := s.ListNamed(id.Thing, "", 0)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(out, n)
		}
		return nil
	}
}

// shadowAPI is the running broker's iot-data API, as the shadow commands call it.
type shadowAPI struct {
	base   string
	region string
	creds  aws.Credentials
	client *http.Client
}

// dialShadowAPI finds the running broker's API listener: ok is false when there is no credentials file
// or nothing listens on controlPlane.listen (no broker runs, or it serves no API).
func dialShadowAPI(cfg *config.Config) (*shadowAPI, bool, error) {
	if !cfg.ControlPlane.Enabled {
		return nil, false, nil
	}
	keys, err := awsapi.ReadCredentials(filepath.Join(cfg.StateDir, broker.CredentialsFile))
	if err != nil {
		return nil, false, nil
	}
	host, port, err := net.SplitHostPort(cfg.ControlPlane.Listen)
	if err != nil {
		return nil, false, fmt.Errorf("controlPlane.listen: %w", err)
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, port)
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, false, nil
	}
	conn.Close()
	caPEM, err := os.ReadFile(coreCAPath(cfg))
	if err != nil {
		return nil, false, fmt.Errorf("the core device CA, to verify the API listener: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, false, fmt.Errorf("no certificate in %s", coreCAPath(cfg))
	}
	return &shadowAPI{
		base:   "https://" + addr,
		region: cfg.Core.Region,
		creds:  aws.Credentials{AccessKeyID: keys.AccessKeyID, SecretAccessKey: keys.SecretAccessKey},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, true, nil
}

// coreCAPath is where the core device CA certificate is: a brought CA's certificateUri, or the state
// directory's (state.OpenState's layout).
func coreCAPath(cfg *config.Config) string {
	if uri := cfg.ClientDeviceAuth.CertificateAuthority.CertificateURI; uri != "" {
		return strings.TrimPrefix(uri, "file://")
	}
	return filepath.Join(cfg.StateDir, "ca", auth.CoreCAFile)
}

func (a *shadowAPI) do(out io.Writer, op string, id shadow.ID, doc []byte) error {
	q := url.Values{}
	if id.Name != "" {
		q.Set("name", id.Name)
	}
	path := "/things/" + id.Thing + "/shadow"
	method := map[string]string{"get": http.MethodGet, "update": http.MethodPost, "delete": http.MethodDelete, "list": http.MethodGet}[op]
	if op != "list" {
		body, err := a.call(method, path, q, doc)
		if err != nil {
			return fmt.Errorf("shadow %s: %w", op, err)
		}
		return printJSON(out, body)
	}
	for token := ""; ; {
		q := url.Values{}
		if token != "" {
			q.Set("nextToken", token)
		}
		body, err := a.call(method, "/api/things/shadow/ListNamedShadowsForThing/"+id.Thing, q, nil)
		if err != nil {
			return fmt.Errorf("shadow list: %w", err)
		}
		var page struct {
			Results   []string `json:"results"`
			NextToken string   `json:"nextToken"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("shadow list: the API's answer: %w", err)
		}
		for _, n := range page.Results {
			fmt.Fprintln(out, n)
		}
		if token = page.NextToken; token == "" {
			return nil
		}
	}
}

// call sends one SigV4-signed iot-data request and returns the body of a 200, or the API's error as
// "<status> <message>".
func (a *shadowAPI) call(method, path string, q url.Values, body []byte) ([]byte, error) {
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), a.creds, req, hex.EncodeToString(sum[:]), "iotdata", a.region, time.Now()); err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the broker's API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("the broker's API: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return raw, nil
	}
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(raw))
	}
	return nil, fmt.Errorf("%d %s", resp.StatusCode, e.Message)
}

// shadowError is a refusal as the command reports it: AWS' code and message, and the cause of a 500.
func shadowError(op string, e *shadow.Error, cause error) error {
	if cause != nil {
		return fmt.Errorf("shadow %s: %d %s: %w", op, e.Code, e.Message, cause)
	}
	return fmt.Errorf("shadow %s: %d %s", op, e.Code, e.Message)
}

// readDocument reads a document from a file, or from standard input for "" or "-".
func readDocument(stdin io.Reader, path string) ([]byte, error) {
	if path == "" || path == "-" {
		raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("read the update document from stdin: %w", err)
		}
		return raw, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--document: %w", err)
	}
	return raw, nil
}

// printJSON prints a shadow document indented, for a person at a terminal.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
