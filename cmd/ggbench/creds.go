package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/state"
)

// device is one client identity: the thing name (also the MQTT client ID and the certificate's CN)
// and its key pair.
type device struct {
	name string
	cert tls.Certificate
}

// credentials are what clients need to reach the broker: the CA that verifies its server
// certificate, the server name to verify, and device identities.
type credentials struct {
	roots      *x509.CertPool
	serverName string
	devices    []device
}

// tlsConfig is the client TLS config of device i (nil for plain TCP).
func (c *credentials) tlsConfig(i int, plain bool) *tls.Config {
	if plain {
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      c.roots,
		ServerName:   c.serverName,
		Certificates: []tls.Certificate{c.devices[i].cert},
	}
}

// loadCredentials returns n device identities: from --cert-dir (one sub-directory per device, as
// `ggbroker device create --out` writes them), after creating the missing ones in --state-dir when it
// is given.
func (t *target) loadCredentials(n int) (*credentials, error) {
	dir := t.certDir
	if t.stateDir != "" {
		if dir == "" {
			dir = filepath.Join(t.stateDir, "ggbench-devices")
		}
		if err := provision(t.stateDir, dir, t.prefix, n, t.keyType, t.policies()); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		return nil, errors.New("give --state-dir (a ggbroker state directory) or --cert-dir (device certificates) and --ca")
	}
	names, err := deviceDirs(dir)
	if err != nil {
		return nil, err
	}
	if len(names) < n {
		return nil, fmt.Errorf("%s has %d devices, %d needed (give --state-dir to create them)", dir, len(names), n)
	}
	names = names[:n]

	caFile := t.caFile
	if caFile == "" {
		if t.stateDir != "" {
			caFile = filepath.Join(t.stateDir, "ca", "core-ca.pem")
		} else {
			caFile = filepath.Join(dir, names[0], auth.CoreCAFile)
		}
	}
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("server CA %s: no PEM certificate", caFile)
	}

	c := &credentials{roots: roots, serverName: t.serverName, devices: make([]device, n)}
	err = parallel(n, 8, func(i int) error {
		p := filepath.Join(dir, names[i])
		kp, err := tls.LoadX509KeyPair(filepath.Join(p, auth.DeviceCertFile), filepath.Join(p, auth.DeviceKeyFile))
		if err != nil {
			return fmt.Errorf("device %s: %w", p, err)
		}
		c.devices[i] = device{name: names[i], cert: kp}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// parallel runs fn(0..n-1) on workers goroutines and joins the errors: loading or issuing thousands of
// device keys is CPU-bound.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func (t *target) policies() []string {
	if t.policy == "" {
		return nil
	}
	return strings.Split(t.policy, ",")
}

// deviceDirs lists the sub-directories of dir that hold a device certificate and key, sorted.
func deviceDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), auth.DeviceKeyFile)); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// provision makes sure devDir holds the n devices PREFIX00000.. registered in the ggbroker state
// directory stateDir: certificates signed by the state's device CA, things named as the directories,
// the given policies attached.
//
// It does what auth.CreateDevice does, but registers all new devices in one registry update:
// CreateDevice rewrites (and fsyncs) the whole registry file for each device, which is quadratic for
// the 10,000 devices of the idle scenario.
func provision(stateDir, devDir, prefix string, n int, keyType string, policies []string) error {
	have, err := deviceDirs(devDir)
	if err != nil {
		return err
	}
	existing := map[string]bool{}
	for _, h := range have {
		existing[h] = true
	}
	var missing []string
	for i := range n {
		if name := fmt.Sprintf("%s%05d", prefix, i); !existing[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	cfg, err := app.DefaultConfig()
	if err != nil {
		return err
	}
	cfg.StateDir = stateDir
	st, err := state.OpenState(cfg)
	if err != nil {
		return err
	}
	kt, err := certs.ParseKeyType(keyType)
	if err != nil {
		return err
	}
	coreCA := st.CoreCA.CertPEM()
	start := time.Now()

	type issued struct {
		name         string
		certPEM, key []byte
		cert         *x509.Certificate
	}
	out := make([]issued, len(missing))
	err = parallel(len(missing), 4, func(i int) error {
		certPEM, keyPEM, cert, err := st.DeviceCA.IssueClient(missing[i], kt, 365*24*time.Hour)
		if err == nil {
			err = writeDevice(filepath.Join(devDir, missing[i]), certPEM, keyPEM, coreCA)
		}
		if err != nil {
			return err
		}
		out[i] = issued{missing[i], certPEM, keyPEM, cert}
		return nil
	})
	if err != nil {
		return err
	}

	now := time.Now().UTC().Truncate(time.Second)
	err = st.Registry.Update(func(d *auth.Data) error {
		for _, x := range out {
			if err := auth.CheckThingName(x.name); err != nil {
				return err
			}
			id := certs.Fingerprint(x.cert)
			d.Things[x.name] = &auth.Thing{Name: x.name}
			d.Certificates[id] = &auth.Certificate{
				ID: id, PEM: string(certs.EncodeCertsPEM(x.cert)), Status: auth.StatusActive,
				Things: []string{x.name}, Policies: policies, CreatedAt: now,
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register devices: %w", err)
	}
	fmt.Fprintf(os.Stderr, "ggbench: created and registered %d devices in %s (%s)\n", len(missing), devDir, time.Since(start).Round(time.Millisecond))
	return nil
}

// writeDevice writes the files `ggbroker device create --out` writes. No fsync: this is throw-away
// benchmark data, and 10,000 devices times three fsyncs take a while.
func writeDevice(dir string, certPEM, keyPEM, coreCA []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{auth.DeviceCertFile, certPEM}, {auth.CoreCAFile, coreCA}, {auth.DeviceKeyFile, keyPEM}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
