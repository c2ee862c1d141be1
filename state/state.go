// Package state is ggbroker's state directory: the core device CA and the device CA, the registry of
// things and certificates, the policy files and the default device policy, and the locks that keep two
// processes from setting it up at once and two brokers from serving it. The CLI, the broker and the
// services open it through here; it knows nothing of MQTT.
package state

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Greengrass holds the core devices' client-device associations and connectivity information that
	// the Greengrass V2 API manages and discovery answers from.
	Greengrass *Greengrass
	// TrustedDeviceCAs holds the device CA and the configured external CAs.
	TrustedDeviceCAs *x509.CertPool
	// CoreCAPath is where the core CA certificate lives (for `ca show`): a file in Dir, or the
	// certificateUri of a CA brought by the user.
	CoreCAPath string
	// PolicyDir holds the AWS IoT policy documents; DefaultPolicy is attached by CreateDevice when the
	// request names none.
	PolicyDir     string
	DefaultPolicy string
	// Notes are things worth logging about how the state was opened (a key type kept, a policy
	// created).
	Notes []string
	// Warnings are things to log at warn level: a new CA or registry created, with its path. Creating
	// an identity is worth an operator's attention, because devices provisioned before trust none of it.
	Warnings []string
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
	if err := checkIdentity(dir, caCfg.CertificateURI != ""); err != nil {
		return nil, err
	}
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
			s.Warnings = append(s.Warnings, fmt.Sprintf("created a new core device CA %s (%s): devices verify the broker with it (the core-ca.pem `device create` writes)", s.CoreCAPath, caType))
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
		s.Warnings = append(s.Warnings, "created a new device CA "+filepath.Join(dir, coreCADir, devCACertFile)+": it signs the device certificates `device create` makes")
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

	regPath := filepath.Join(dir, registryFile)
	_, statErr := os.Stat(regPath)
	s.Registry, err = auth.OpenRegistry(regPath)
	if err != nil {
		return nil, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		s.Warnings = append(s.Warnings, "created a new, empty registry of things and certificates "+regPath)
	}
	s.Greengrass = openGreengrass(filepath.Join(dir, greengrassFile))
	s.PolicyDir, s.DefaultPolicy = cfg.PolicyDir(), cfg.Authorization.DefaultDevicePolicy
	if s.DefaultPolicy != "" {
		created, err := ensureDefaultPolicy(s.PolicyDir, s.DefaultPolicy)
		if err != nil {
			return nil, err
		}
		if created {
			s.Notes = append(s.Notes, "created default device policy "+PolicyPath(s.PolicyDir, s.DefaultPolicy))
		} else if path := PolicyPath(s.PolicyDir, s.DefaultPolicy); broadDefaultPolicy(path) {
			s.Warnings = append(s.Warnings, fmt.Sprintf("the default device policy %s still lets every device use every topic outside $aws/ "+
				"(statements %s, the default before issue 15; `ggbroker audit` flags it CRITICAL): delete the file and the next "+
				"ggbroker command writes the one scoped to each device's own topics (README, \"Default device policy\")", path, strings.Join(broadDefaultSids, " and ")))
		}
	}
	return s, nil
}

// CreateDevice provisions a device as `ggbroker device create` does: with the policies the request
// names, or the default device policy when it names none. Named policies must exist. It writes no
// files (ProvisionDevice does).
func (s *State) CreateDevice(req auth.NewDevice) (*auth.Device, error) {
	var err error
	if req.Policies, err = s.devicePolicies(req.Policies, nil); err != nil {
		return nil, err
	}
	return auth.CreateDevice(s.Registry, s.DeviceCA, req)
}

// ProvisionDevice is `device create` (existing: auth.RefuseExisting, or auth.ReplaceExisting with
// --force) and `device add-cert` (auth.RequireExisting): see auth.ProvisionDevice. Without named
// policies, a new thing gets the default device policy and add-cert gives the new certificate the
// policies of the thing's other certificates (the default device policy if they have none), so that
// the device can do with its new certificate what it did with the old one.
func (s *State) ProvisionDevice(req auth.NewDevice, existing auth.Existing, dirFor func(certID string) string) (*auth.Device, string, error) {
	var inherited []string
	if existing == auth.RequireExisting && len(req.Policies) == 0 {
		cs, err := s.Registry.CertificatesOf(req.Thing.Name)
		if err != nil {
			return nil, "", err
		}
		for _, c := range cs {
			for _, p := range c.Policies {
				if !slices.Contains(inherited, p) {
					inherited = append(inherited, p)
				}
			}
		}
	}
	var err error
	if req.Policies, err = s.devicePolicies(req.Policies, inherited); err != nil {
		return nil, "", err
	}
	return auth.ProvisionDevice(s.Registry, s.DeviceCA, req, existing, dirFor, s.CoreCA.CertPEM())
}

// RegisterDevice is `device register`: an existing certificate registered for a thing, with the
// policies named or else the default device policy, as CreateDevice does (a certificate with no
// policy is refused at CONNECT).
func (s *State) RegisterDevice(thing auth.Thing, cert *x509.Certificate, policies []string) (*auth.Certificate, error) {
	ps, err := s.devicePolicies(policies, nil)
	if err != nil {
		return nil, err
	}
	return auth.RegisterDevice(s.Registry, thing, cert, ps)
}

// devicePolicies are the policies a new certificate gets: those named, else fallback, else the
// default device policy. Each must exist.
func (s *State) devicePolicies(named, fallback []string) ([]string, error) {
	ps := named
	if len(ps) == 0 {
		ps = fallback
	}
	if len(ps) == 0 && s.DefaultPolicy != "" {
		ps = []string{s.DefaultPolicy}
	}
	for _, p := range ps {
		if _, err := os.Stat(PolicyPath(s.PolicyDir, p)); err != nil {
			return nil, fmt.Errorf("policy %q: no file %s (create it with `ggbroker policy create`)", p, PolicyPath(s.PolicyDir, p))
		}
	}
	return ps, nil
}

// checkIdentity refuses a state directory that holds part of an identity: what is there was made with
// what is missing, and making the missing part anew would silently break it. A new core device CA makes
// every device's core-ca.pem useless; a new device CA no longer verifies the device certificates the
// registry holds; an empty registry refuses every device the CAs were set up for. A directory that
// holds none of them is a first start, and one that holds all of them is a restart.
func checkIdentity(dir string, coreCABrought bool) error {
	rel := func(parts ...string) string { return filepath.Join(parts...) }
	coreCA := []string{rel(coreCADir, coreCACertFile), rel(coreCADir, coreCAKeyFile)}
	devCA := []string{rel(coreCADir, devCACertFile), rel(coreCADir, devCAKeyFile)}
	server := rel(serverDir, serverCertFile)
	exists := func(name string) (bool, error) {
		_, err := os.Lstat(filepath.Join(dir, name))
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, os.ErrNotExist):
			return false, nil
		}
		return false, fmt.Errorf("state directory %s: %w", dir, err)
	}
	anyOf := func(names ...string) (bool, error) {
		for _, n := range names {
			if ok, err := exists(n); ok || err != nil {
				return ok, err
			}
		}
		return false, nil
	}
	hasCore, err := anyOf(coreCA...)
	if err != nil {
		return err
	}
	hasDev, err := anyOf(devCA...)
	if err != nil {
		return err
	}
	hasServer, err := exists(server)
	if err != nil {
		return err
	}
	hasRegistry, err := exists(registryFile)
	if err != nil {
		return err
	}
	certCount := 0
	if hasRegistry {
		if raw, err := os.ReadFile(filepath.Join(dir, registryFile)); err == nil {
			if d, err := auth.ParseData(raw); err == nil {
				certCount = len(d.Certificates)
			}
		} // an unreadable registry is reported by OpenRegistry, with its reason
	}

	var held, missing []string
	if hasDev {
		held = append(held, "the device CA ("+devCA[0]+")")
	}
	if hasServer {
		held = append(held, "a server certificate ("+server+")")
	}
	if certCount > 0 {
		held = append(held, fmt.Sprintf("a registry with %d certificate(s) (%s)", certCount, registryFile))
	}
	if hasCore {
		held = append([]string{"the core device CA (" + coreCA[0] + ")"}, held...)
	}
	if !hasCore && !coreCABrought && len(held) > 0 {
		missing = append(missing, "the core device CA ("+coreCA[0]+" and "+coreCA[1]+"): a new one would make every device's core-ca.pem useless")
	}
	if !hasDev && certCount > 0 {
		missing = append(missing, "the device CA ("+devCA[0]+" and "+devCA[1]+"): a new one would not verify the registered device certificates")
	}
	if !hasRegistry && (hasCore || hasDev) {
		missing = append(missing, "the registry ("+registryFile+"): without it every device is refused (CERTIFICATE_NOT_REGISTERED); "+
			"to start with no devices on purpose and keep the CAs, create an empty one: echo '{}' > "+filepath.Join(dir, registryFile))
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("state directory %s holds part of an identity: it has %s, but not %s. Nothing was created. Restore what is missing from a backup, or move the whole directory aside to start over (every device must then be provisioned again)",
		dir, strings.Join(held, ", "), strings.Join(missing, "; nor "))
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
