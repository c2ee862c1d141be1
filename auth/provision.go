package auth

import (
	"crypto/x509"
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
	Certificate     *Certificate
}

// CreateDevice makes a key and a certificate signed by the device CA, and registers the thing and the
// certificate (ACTIVE, attached to the thing) in one registry update.
func CreateDevice(reg *Registry, deviceCA *certs.Authority, req NewDevice) (*Device, error) {
	if err := CheckThingName(req.Thing.Name); err != nil {
		return nil, err
	}
	certPEM, keyPEM, cert, err := deviceCA.IssueClient(req.Thing.Name, req.KeyType, req.Validity)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %q: %w", req.Thing.Name, err)
	}
	rec, err := reg.Register(req.Thing, cert, req.Policies)
	if err != nil {
		return nil, fmt.Errorf("register %q: %w", req.Thing.Name, err)
	}
	return &Device{CertPEM: certPEM, KeyPEM: keyPEM, Certificate: rec}, nil
}

// RegisterDevice registers an existing certificate (from a trusted external CA, or self-signed, as AWS
// IoT allows) for a thing.
func RegisterDevice(reg *Registry, thing Thing, cert *x509.Certificate, policies []string) (*Certificate, error) {
	if err := CheckThingName(thing.Name); err != nil {
		return nil, err
	}
	return reg.Register(thing, cert, policies)
}

// WriteFiles writes the device's certificate, private key (0600) and the core CA a device uses to verify
// the broker into dir, atomically.
func (d *Device) WriteFiles(dir string, coreCAPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{DeviceKeyFile, d.KeyPEM, 0o600},
		{DeviceCertFile, d.CertPEM, 0o644},
		{CoreCAFile, coreCAPEM, 0o644},
	}
	for _, f := range files {
		if err := certs.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}
