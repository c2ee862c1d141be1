package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// File names `ggbroker device create` writes, the names AWS IoT's console and Greengrass' tutorials use.
const (
	DeviceCertFile = "device.pem.crt"
	DeviceKeyFile  = "private.pem.key"
	CoreCAFile     = "core-ca.pem"
)

// thingNamePattern is AWS IoT's rule for thing names (aws-iot-core/limits-iot.md: 1-128 characters of
// a-z, A-Z, 0-9, colon, underscore and hyphen).
var thingNamePattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

var (
	attrNamePattern  = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#-]{1,128}$`)
	attrValuePattern = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}$`)
)

// CheckAttributes refuses thing attributes AWS IoT would refuse (CreateThing's AttributePayload: at
// most 50, names of 1 to 128 and values of up to 800 characters of its character set), so that a
// thing made with `device create --attr` registers in the cloud too.
func CheckAttributes(attrs map[string]string) error {
	if len(attrs) > 50 {
		return fmt.Errorf("a thing has at most 50 attributes, got %d", len(attrs))
	}
	for k, v := range attrs {
		if !attrNamePattern.MatchString(k) {
			return fmt.Errorf("attribute name %q must be 1 to 128 characters of a-z, A-Z, 0-9 and _.,@/:#-", k)
		}
		if !attrValuePattern.MatchString(v) {
			return fmt.Errorf("attribute %q: value %q must be up to 800 characters of a-z, A-Z, 0-9 and _.,@/:#=[]-", k, v)
		}
	}
	return nil
}

// CheckThingName refuses names AWS IoT would refuse, so what works here registers in the cloud too.
func CheckThingName(name string) error {
	if !thingNamePattern.MatchString(name) {
		return fmt.Errorf("thing name %q is invalid: use 1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-', as AWS IoT does", name)
	}
	return nil
}

// NewDevice is what `device create` asks for.
type NewDevice struct {
	Thing    Thing
	KeyType  certs.KeyType
	Validity time.Duration
	Policies []string
}

// Device is a provisioned device: its credentials and its registry entry.
type Device struct {
	CertPEM, KeyPEM []byte
	// Certificate is the registry entry; nil until the device is registered.
	Certificate *Certificate
	cert        *x509.Certificate
}

// ID is the certificate ID (SHA-256 of the DER), known before the device is registered.
func (d *Device) ID() string { return certs.Fingerprint(d.cert) }

// IssueDevice makes a key and a certificate signed by the device CA for a thing, without registering
// them: ProvisionDevice writes the files before it registers, so that a failure leaves no ACTIVE
// certificate whose key is gone.
func IssueDevice(deviceCA *certs.Authority, req NewDevice) (*Device, error) {
	if err := CheckThingName(req.Thing.Name); err != nil {
		return nil, err
	}
	certPEM, keyPEM, cert, err := deviceCA.IssueClient(req.Thing.Name, req.KeyType, req.Validity)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %q: %w", req.Thing.Name, err)
	}
	return &Device{CertPEM: certPEM, KeyPEM: keyPEM, cert: cert}, nil
}

// CreateDevice makes a key and a certificate signed by the device CA, and registers the thing and the
// certificate (ACTIVE, attached to the thing) in one registry update. It writes no files (tests and
// tools that keep the key in memory); `device create` uses ProvisionDevice.
func CreateDevice(reg *Registry, deviceCA *certs.Authority, req NewDevice) (*Device, error) {
	d, err := IssueDevice(deviceCA, req)
	if err != nil {
		return nil, err
	}
	if d.Certificate, err = reg.Register(req.Thing, d.cert, req.Policies); err != nil {
		return nil, fmt.Errorf("register %q: %w", req.Thing.Name, err)
	}
	return d, nil
}

// Existing says what ProvisionDevice does when the thing is registered already.
type Existing int

const (
	// RefuseExisting: `device create`. Creating a thing that exists would add a second ACTIVE
	// certificate to it, usually by mistake (the same command run twice).
	RefuseExisting Existing = iota
	// ReplaceExisting: `device create --force`: the thing is registered again (with the type and
	// attributes given, if any) and gets one more certificate; its other certificates stay as they are.
	ReplaceExisting
	// RequireExisting: `device add-cert`: the thing must exist; it gets one more certificate.
	RequireExisting
)

// ProvisionDevice is `device create` and `device add-cert`: it issues a key and a certificate, writes
// the device's files into dirFor(certificate ID), never overwriting a file, and only then registers
// the certificate (ACTIVE, attached to the thing, with req.Policies). If the files cannot be written,
// nothing is registered; if the registration fails, the files are removed. Either way a failure
// leaves no ACTIVE certificate whose key is lost, and no key for a certificate that is not registered.
func ProvisionDevice(reg *Registry, deviceCA *certs.Authority, req NewDevice, existing Existing, dirFor func(certID string) string, coreCAPEM []byte) (*Device, string, error) {
	if err := CheckThingName(req.Thing.Name); err != nil {
		return nil, "", err
	}
	name := req.Thing.Name
	_, exists, err := reg.Thing(name)
	if err != nil {
		return nil, "", err
	}
	switch {
	case exists && existing == RefuseExisting:
		n := 0
		if cs, err := reg.CertificatesOf(name); err == nil {
			n = len(cs)
		}
		return nil, "", fmt.Errorf("thing %q exists (with %d certificate(s)): to give it another certificate use `ggbroker device add-cert %s --out DIR`; to register it again with a new certificate use --force (its other certificates stay ACTIVE: revoke them with `ggbroker device revoke CERTIFICATE_ID`)", name, n, name)
	case !exists && existing == RequireExisting:
		return nil, "", fmt.Errorf("thing %q is not registered: create it with `ggbroker device create %s`", name, name)
	}
	d, err := IssueDevice(deviceCA, req)
	if err != nil {
		return nil, "", err
	}
	dir := dirFor(d.ID())
	if err := d.WriteFiles(dir, coreCAPEM); err != nil {
		return nil, "", fmt.Errorf("nothing was registered: %w", err)
	}
	if d.Certificate, err = reg.Register(req.Thing, d.cert, req.Policies); err != nil {
		if rerr := d.RemoveFiles(dir); rerr != nil {
			return nil, "", fmt.Errorf("register %q: %w (and removing its files failed: %v)", name, err, rerr)
		}
		return nil, "", fmt.Errorf("register %q: %w (its files were removed)", name, err)
	}
	return d, dir, nil
}

// RegisterDevice registers an existing certificate (from a trusted external CA, or self-signed, as AWS
// IoT allows) for a thing.
func RegisterDevice(reg *Registry, thing Thing, cert *x509.Certificate, policies []string) (*Certificate, error) {
	if err := CheckThingName(thing.Name); err != nil {
		return nil, err
	}
	return reg.Register(thing, cert, policies)
}

// deviceFiles are the files WriteFiles writes, in order: the key first.
func (d *Device) deviceFiles(coreCAPEM []byte) []struct {
	name string
	data []byte
	perm os.FileMode
} {
	return []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{DeviceKeyFile, d.KeyPEM, 0o600},
		{DeviceCertFile, d.CertPEM, 0o644},
		{CoreCAFile, coreCAPEM, 0o644},
	}
}

// WriteFiles writes the device's certificate, private key (0600) and the core CA a device uses to verify
// the broker into dir. It never replaces a file: if any of the three exists it writes none, and each
// is written whole (temporary file, fsync, then a hard link that fails if the name exists) so that a
// crash never leaves half a key. If one write fails, the ones written are removed.
func (d *Device) WriteFiles(dir string, coreCAPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := d.deviceFiles(coreCAPEM)
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s exists: ggbroker never overwrites a device's files (a key it replaced would be lost); remove them or choose another --out", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for i, f := range files {
		if err := writeFileExclusive(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			for _, w := range files[:i] {
				_ = os.Remove(filepath.Join(dir, w.name))
			}
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// RemoveFiles removes the files WriteFiles wrote into dir (after a failed registration).
func (d *Device) RemoveFiles(dir string) error {
	var errs []error
	for _, f := range d.deviceFiles(nil) {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeFileExclusive writes data to path whole, failing if path exists: a temporary file in the same
// directory, fsynced, then linked to path (link(2) never replaces a name, unlike rename(2)).
func writeFileExclusive(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // 0600 until the Chmod below
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // after the link, only the temporary name goes
	if _, err = f.Write(data); err == nil {
		if err = f.Chmod(perm); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: not overwritten", path)
	} else if err != nil {
		// A file system without hard links (FAT, some network mounts): O_EXCL still never replaces.
		out, oerr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if oerr != nil {
			return oerr
		}
		if _, err = out.Write(data); err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
			return err
		}
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
