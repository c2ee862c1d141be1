// Package state is ggbroker's state directory: the core device CA and the device CA, the registry of
// things and certificates, the policy files and the default device policy, and the locks that keep two
// processes from setting it up at once and two brokers from serving it. The CLI, the broker and the
// services open it through here; it knows nothing of MQTT.
package state

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

// Files in the state directory.
const (
	coreCADir      = "ca"
	coreCACertFile = "core-ca.pem"
	coreCAKeyFile  = "core-ca.key"
	devCACertFile  = "device-ca.pem"
	devCAKeyFile   = "device-ca.key"
	serverDir      = "server"
	serverCertFile = "server.pem"
	serverKeyFile  = "server.key"
	registryFile   = "registry.json"
)

// State is what ggbroker keeps in its state directory: the core device CA (signs the broker's server
// certificates; devices trust it), the device CA (signs device certificates; the broker trusts it, as AWS
// IoT's CA is separate from a Greengrass core's CA) and the registry.
type State struct {
	Dir      string
	CoreCA   *certs.Authority
	DeviceCA *certs.Authority
	Registry *auth.Registry
	// TrustedDeviceCAs holds the device CA and the configured external CAs.
	TrustedDeviceCAs *x509.CertPool
	// CoreCAPath is where the core CA certificate lives (for `ca show`): a file in Dir, or the
	// certificateUri of a CA brought by the user.
	CoreCAPath string
	// PolicyDir holds the AWS IoT policy documents; DefaultPolicy is attached by CreateDevice when the
	// request names none.
	PolicyDir     string
	DefaultPolicy string
	// Notes are things worth logging about how the state was opened (a CA created, a key type kept).
	Notes []string
}

// OpenState opens (creating on first use) the state directory that cfg names.
func OpenState(cfg *config.Config) (*State, error) {
	dir := cfg.StateDir
	if err := os.MkdirAll(filepath.Join(dir, coreCADir), 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := checkPermissions(dir); err != nil {
		return nil, err
	}
	unlock, err := lockInit(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s := &State{Dir: dir}

	caCfg := cfg.ClientDeviceAuth.CertificateAuthority
	caType, err := certs.ParseKeyType(caCfg.CAType.First())
	if err != nil {
		return nil, fmt.Errorf("clientDeviceAuth.certificateAuthority.caType: %w", err)
	}
	if caCfg.CertificateURI != "" {
		s.CoreCA, err = certs.LoadAuthorityFromURIs(caCfg.CertificateURI, caCfg.PrivateKeyURI, caCfg.CertificateChainURI)
		if err != nil {
			return nil, fmt.Errorf("clientDeviceAuth.certificateAuthority: %w", err)
		}
		s.CoreCAPath = strings.TrimPrefix(caCfg.CertificateURI, "file://")
		s.Notes = append(s.Notes, "using the core device CA from "+caCfg.CertificateURI)
	} else {
		s.CoreCAPath = filepath.Join(dir, coreCADir, coreCACertFile)
		ca, created, err := certs.LoadOrCreateAuthority(s.CoreCAPath, filepath.Join(dir, coreCADir, coreCAKeyFile), certs.AuthorityOptions{
			CommonName: "ggbroker Core Device CA", Organization: "ggbroker", KeyType: caType,
		})
		if err != nil {
			return nil, fmt.Errorf("core device CA: %w", err)
		}
		s.CoreCA = ca
		if created {
			s.Notes = append(s.Notes, fmt.Sprintf("created core device CA %s (%s)", s.CoreCAPath, caType))
		} else if kt := KeyTypeOf(ca.Cert); kt != caType {
			s.Notes = append(s.Notes, fmt.Sprintf("core device CA %s is %s, not the configured %s: keeping it, because devices trust it (move the ca directory aside to make a new one)", s.CoreCAPath, kt, caType))
		}
	}

	devCA, created, err := certs.LoadOrCreateAuthority(filepath.Join(dir, coreCADir, devCACertFile), filepath.Join(dir, coreCADir, devCAKeyFile), certs.AuthorityOptions{
		CommonName: "ggbroker Device CA", Organization: "ggbroker", KeyType: certs.ECDSAP256,
	})
	if err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	if created {
		s.Notes = append(s.Notes, "created device CA "+filepath.Join(dir, coreCADir, devCACertFile))
	}
	s.DeviceCA = devCA
	s.TrustedDeviceCAs = devCA.Pool()
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
			s.TrustedDeviceCAs.AddCert(c)
		}
	}

	s.Registry, err = auth.OpenRegistry(filepath.Join(dir, registryFile))
	if err != nil {
		return nil, err
	}
	s.PolicyDir, s.DefaultPolicy = cfg.PolicyDir(), cfg.Authorization.DefaultDevicePolicy
	if s.DefaultPolicy != "" {
		created, err := ensureDefaultPolicy(s.PolicyDir, s.DefaultPolicy)
		if err != nil {
			return nil, err
		}
		if created {
			s.Notes = append(s.Notes, "created default device policy "+PolicyPath(s.PolicyDir, s.DefaultPolicy))
		}
	}
	return s, nil
}

// CreateDevice provisions a device as `ggbroker device create` does: with the policies the request
// names, or the default device policy when it names none. Named policies must exist.
func (s *State) CreateDevice(req auth.NewDevice) (*auth.Device, error) {
	if len(req.Policies) == 0 && s.DefaultPolicy != "" {
		req.Policies = []string{s.DefaultPolicy}
	}
	for _, p := range req.Policies {
		if _, err := os.Stat(PolicyPath(s.PolicyDir, p)); err != nil {
			return nil, fmt.Errorf("policy %q: no file %s (create it with `ggbroker policy create`)", p, PolicyPath(s.PolicyDir, p))
		}
	}
	return auth.CreateDevice(s.Registry, s.DeviceCA, req)
}

// ServerCertPaths are where the MQTT listener's current server certificate and key are kept between
// restarts.
func (s *State) ServerCertPaths() (cert, key string) {
	return filepath.Join(s.Dir, serverDir, serverCertFile), filepath.Join(s.Dir, serverDir, serverKeyFile)
}

// ListenerCertPaths are where another listener's server certificate and key are kept between restarts:
// <stateDir>/server/<name>.pem and .key (discovery, api).
func (s *State) ListenerCertPaths(name string) (cert, key string) {
	return filepath.Join(s.Dir, serverDir, name+".pem"), filepath.Join(s.Dir, serverDir, name+".key")
}

// KeyTypeOf is the key type of a CA certificate; server certificates use their CA's key type, and a
// brought CA of another kind (P-384, RSA 4096) gets ECDSA P-256 server keys.
func KeyTypeOf(c *x509.Certificate) certs.KeyType {
	if kt := certs.KeyTypeOf(c.PublicKey); kt != "" {
		return kt
	}
	return certs.ECDSAP256
}
