// Package provisioning holds what AWS IoT's provisioning flows need offline: the registered CA
// certificates (with their auto-registration setting and JITP template), the provisioning templates,
// the account's registration code, and the template engine that runs a template's Thing, Certificate
// and Policy resources against the registry. It is a library, not a service: the iotapi service serves
// its API operations and its MQTT topics (fleet provisioning by claim) through the service seam.
package provisioning

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// CA statuses (AWS IoT's CACertificateStatus).
const (
	CAActive   = "ACTIVE"
	CAInactive = "INACTIVE"
)

// CA certificate modes (AWS IoT's CertificateMode).
const (
	ModeDefault = "DEFAULT"
	ModeSNIOnly = "SNI_ONLY"
)

// Template types (AWS IoT's TemplateType).
const (
	TypeFleet = "FLEET_PROVISIONING"
	TypeJITP  = "JITP"
)

// ErrNotFound and ErrExists are the catalog's refusals (errors.Is).
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// RegistrationConfig is a CA's JITP settings: an inline template body, or the name of a JITP
// provisioning template, and the role AWS would assume (kept, not used offline).
type RegistrationConfig struct {
	TemplateBody string `json:"templateBody,omitempty"`
	RoleArn      string `json:"roleArn,omitempty"`
	TemplateName string `json:"templateName,omitempty"`
}

// Empty reports whether no template is configured.
func (r RegistrationConfig) Empty() bool { return r.TemplateBody == "" && r.TemplateName == "" }

// CA is a registered CA certificate (RegisterCACertificate).
type CA struct {
	ID               string             `json:"certificateId"`
	PEM              string             `json:"certificatePem"`
	Status           string             `json:"status"`
	AutoRegistration bool               `json:"autoRegistration"`
	Mode             string             `json:"certificateMode"`
	Registration     RegistrationConfig `json:"registrationConfig"`
	CreatedAt        time.Time          `json:"creationDate"`
	ModifiedAt       time.Time          `json:"lastModifiedDate"`

	parsed *x509.Certificate
}

// Cert is the parsed CA certificate.
func (c *CA) Cert() *x509.Certificate { return c.parsed }

// Hook is a template's pre-provisioning hook (a Lambda in AWS): kept, and refused when it would run.
type Hook struct {
	TargetArn      string `json:"targetArn"`
	PayloadVersion string `json:"payloadVersion,omitempty"`
}

// Template is a provisioning template (CreateProvisioningTemplate).
type Template struct {
	Name        string    `json:"templateName"`
	Description string    `json:"description,omitempty"`
	Body        string    `json:"templateBody"`
	Enabled     bool      `json:"enabled"`
	RoleArn     string    `json:"provisioningRoleArn"`
	Type        string    `json:"type"`
	Hook        *Hook     `json:"preProvisioningHook,omitempty"`
	Version     int       `json:"defaultVersionId"`
	CreatedAt   time.Time `json:"creationDate"`
	ModifiedAt  time.Time `json:"lastModifiedDate"`
}

type catalogData struct {
	RegistrationCode string               `json:"registrationCode,omitempty"`
	CAs              map[string]*CA       `json:"caCertificates"`
	Templates        map[string]*Template `json:"provisioningTemplates"`
}

// Catalog is the provisioning data of one state directory: <stateDir>/provisioning.json, written
// atomically (0600: the registration code proves CA ownership) on every change. Only the broker's
// process uses it, so a mutex orders changes.
type Catalog struct {
	path string
	mu   sync.Mutex
	data catalogData
}

// OpenCatalog reads the catalog file in dir (none yet: an empty catalog).
func OpenCatalog(dir string) (*Catalog, error) {
	c := &Catalog{path: filepath.Join(dir, "provisioning.json"), data: catalogData{CAs: map[string]*CA{}, Templates: map[string]*Template{}}}
	raw, err := os.ReadFile(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("provisioning catalog: %w", err)
	}
	if err := json.Unmarshal(raw, &c.data); err != nil {
		return nil, fmt.Errorf("provisioning catalog %s: %w", c.path, err)
	}
	if c.data.CAs == nil {
		c.data.CAs = map[string]*CA{}
	}
	if c.data.Templates == nil {
		c.data.Templates = map[string]*Template{}
	}
	for id, ca := range c.data.CAs {
		cs, err := certs.ParseCertsPEM([]byte(ca.PEM))
		if err != nil || certs.Fingerprint(cs[0]) != id {
			return nil, fmt.Errorf("provisioning catalog %s: CA certificate %s: not its certificate (%v)", c.path, id, err)
		}
		ca.parsed = cs[0]
	}
	return c, nil
}

// update applies fn to a copy of the data and writes it; on any error nothing changes.
func (c *Catalog) update(fn func(d *catalogData) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := catalogData{RegistrationCode: c.data.RegistrationCode, CAs: map[string]*CA{}, Templates: map[string]*Template{}}
	for k, v := range c.data.CAs {
		cp := *v
		next.CAs[k] = &cp
	}
	for k, v := range c.data.Templates {
		cp := *v
		next.Templates[k] = &cp
	}
	if err := fn(&next); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(&next, "", "  ")
	if err != nil {
		return fmt.Errorf("encode provisioning catalog: %w", err)
	}
	if err := certs.WriteFileAtomic(c.path, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("write provisioning catalog: %w", err)
	}
	c.data = next
	return nil
}

// RegistrationCode is the account's registration code (GetRegistrationCode): 64 hex characters, made
// on first use and stable after (reference/services/provisioning.md, case 1).
func (c *Catalog) RegistrationCode() (string, error) {
	c.mu.Lock()
	code := c.data.RegistrationCode
	c.mu.Unlock()
	if code != "" {
		return code, nil
	}
	err := c.update(func(d *catalogData) error {
		if d.RegistrationCode == "" {
			var b [32]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			d.RegistrationCode = hex.EncodeToString(b[:])
		}
		code = d.RegistrationCode
		return nil
	})
	return code, err
}

// CAs lists the registered CAs, oldest first.
func (c *Catalog) CAs() []*CA {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*CA, 0, len(c.data.CAs))
	for _, ca := range c.data.CAs {
		cp := *ca
		out = append(out, &cp)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// CA returns one registered CA.
func (c *Catalog) CA(id string) (*CA, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ca, ok := c.data.CAs[id]
	if !ok {
		return nil, fmt.Errorf("%w: CA certificate %s", ErrNotFound, id)
	}
	cp := *ca
	return &cp, nil
}

// AddCA registers a CA; one already registered is ErrExists.
func (c *Catalog) AddCA(ca *CA, parsed *x509.Certificate) error {
	ca.ID, ca.PEM, ca.parsed = certs.Fingerprint(parsed), string(certs.EncodeCertsPEM(parsed)), parsed
	now := time.Now().UTC().Truncate(time.Second)
	ca.CreatedAt, ca.ModifiedAt = now, now
	return c.update(func(d *catalogData) error {
		if _, ok := d.CAs[ca.ID]; ok {
			return fmt.Errorf("%w: CA certificate %s is registered", ErrExists, ca.ID)
		}
		d.CAs[ca.ID] = ca
		return nil
	})
}

// UpdateCA applies edit to a registered CA.
func (c *Catalog) UpdateCA(id string, edit func(*CA) error) error {
	return c.update(func(d *catalogData) error {
		ca, ok := d.CAs[id]
		if !ok {
			return fmt.Errorf("%w: CA certificate %s", ErrNotFound, id)
		}
		if err := edit(ca); err != nil {
			return err
		}
		ca.ModifiedAt = time.Now().UTC().Truncate(time.Second)
		return nil
	})
}

// DeleteCA removes a registered CA.
func (c *Catalog) DeleteCA(id string) error {
	return c.update(func(d *catalogData) error {
		if _, ok := d.CAs[id]; !ok {
			return fmt.Errorf("%w: CA certificate %s", ErrNotFound, id)
		}
		delete(d.CAs, id)
		return nil
	})
}

// SignerOf is the registered CA that vouches for a presented chain, nil if none: one that signed the
// leaf, or one that signed an intermediate the device sent and that signed the leaf (the device need
// not send the registered CA itself: auto-register-device-cert.md).
func (c *Catalog) SignerOf(chain []*x509.Certificate) *CA {
	if len(chain) == 0 {
		return nil
	}
	leaf := chain[0]
	for _, ca := range c.CAs() {
		if leaf.CheckSignatureFrom(ca.parsed) == nil {
			return ca
		}
		for _, inter := range chain[1:] {
			if inter.IsCA && leaf.CheckSignatureFrom(inter) == nil && (inter.Equal(ca.parsed) || inter.CheckSignatureFrom(ca.parsed) == nil) {
				return ca
			}
		}
	}
	return nil
}

// Templates lists the provisioning templates by name.
func (c *Catalog) Templates() []*Template {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.data.Templates))
	for n := range c.data.Templates {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*Template, len(names))
	for i, n := range names {
		cp := *c.data.Templates[n]
		out[i] = &cp
	}
	return out
}

// Template returns one provisioning template.
func (c *Catalog) Template(name string) (*Template, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.data.Templates[name]
	if !ok {
		return nil, fmt.Errorf("%w: provisioning template %s", ErrNotFound, name)
	}
	cp := *t
	return &cp, nil
}

// AddTemplate stores a new provisioning template; an existing name is ErrExists.
func (c *Catalog) AddTemplate(t *Template) error {
	now := time.Now().UTC().Truncate(time.Second)
	t.CreatedAt, t.ModifiedAt, t.Version = now, now, 1
	return c.update(func(d *catalogData) error {
		if _, ok := d.Templates[t.Name]; ok {
			return fmt.Errorf("%w: provisioning template %s", ErrExists, t.Name)
		}
		d.Templates[t.Name] = t
		return nil
	})
}

// DeleteTemplate removes a provisioning template. One a CA names for JITP is refused (AWS:
// DeleteConflictException), reported as an error naming the CA.
func (c *Catalog) DeleteTemplate(name string) error {
	return c.update(func(d *catalogData) error {
		if _, ok := d.Templates[name]; !ok {
			return fmt.Errorf("%w: provisioning template %s", ErrNotFound, name)
		}
		for _, ca := range d.CAs {
			if ca.Registration.TemplateName == name {
				return &InUseError{Template: name, CA: ca.ID}
			}
		}
		delete(d.Templates, name)
		return nil
	})
}

// InUseError: a template a CA still names cannot be deleted.
type InUseError struct{ Template, CA string }

func (e *InUseError) Error() string {
	return fmt.Sprintf("provisioning template %s is the JITP template of CA certificate %s: remove it there first", e.Template, strings.ToLower(e.CA))
}
