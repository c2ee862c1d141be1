// Package auth decides who a client device is: it keeps the registry of things and certificates (the
// offline stand-in for AWS IoT's registry) and maps a TLS client certificate plus an MQTT client ID to a
// registered thing, refusing everything else with a reason a person can act on.
package auth

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// Status is a certificate's registry status, with AWS IoT's names.
type Status string

// Certificate statuses. Only ACTIVE certificates may connect (aws-iot-core/x509-client-certs.md).
// The PENDING_* and REGISTER_INACTIVE ones are AWS IoT's too (UpdateCertificate's newStatus): a
// just-in-time registered certificate is PENDING_ACTIVATION until it is activated.
const (
	StatusActive            Status = "ACTIVE"
	StatusInactive          Status = "INACTIVE"
	StatusRevoked           Status = "REVOKED"
	StatusPendingActivation Status = "PENDING_ACTIVATION"
	StatusPendingTransfer   Status = "PENDING_TRANSFER"
	StatusRegisterInactive  Status = "REGISTER_INACTIVE"
)

// Valid reports whether s is one of AWS IoT's certificate statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusActive, StatusInactive, StatusRevoked, StatusPendingActivation, StatusPendingTransfer, StatusRegisterInactive:
		return true
	}
	return false
}

// Errors of registry edits, for callers that answer with AWS' error types (errors.Is).
var (
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrVersionConflict = errors.New("version conflict")
	// ErrDeleteConflict: the resource is still attached to others.
	ErrDeleteConflict = errors.New("still attached")
	// ErrCertificateState: the certificate's status does not allow the change (AWS'
	// CertificateStateException), such as making a REVOKED certificate anything else.
	ErrCertificateState = errors.New("certificate state")
)

// Thing is a registered device.
type Thing struct {
	Name       string            `json:"thingName"`
	TypeName   string            `json:"thingTypeName,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// ID is AWS IoT's thingId (a UUID), given when the thing is first stored.
	ID string `json:"thingId,omitempty"`
	// Version counts the thing's updates, from 1 (DescribeThing's version, UpdateThing's expectedVersion).
	Version int64 `json:"version,omitempty"`
}

// Certificate is a registered device certificate. ID is the lowercase hex SHA-256 of its DER encoding,
// the same form as AWS IoT's certificate ID.
type Certificate struct {
	ID        string    `json:"certificateId"`
	PEM       string    `json:"certificatePem"`
	Status    Status    `json:"status"`
	Things    []string  `json:"things,omitempty"`
	Policies  []string  `json:"policies,omitempty"`
	CreatedAt time.Time `json:"creationDate"`
	// CACertificateID is the registered CA that signed it, "" if none (AWS' caCertificateId).
	CACertificateID string `json:"caCertificateId,omitempty"`
	// ModifiedAt is when its status last changed (AWS' lastModifiedDate); zero: CreatedAt.
	ModifiedAt time.Time `json:"lastModifiedDate,omitzero"`
}

// AttachedTo reports whether the certificate is attached to the thing.
func (c *Certificate) AttachedTo(thing string) bool {
	return slices.Contains(c.Things, thing)
}

// Data is the registry's content, as stored in its JSON file.
type Data struct {
	Things       map[string]*Thing       `json:"things"`
	Certificates map[string]*Certificate `json:"certificates"`
	ThingGroups  map[string]*ThingGroup  `json:"thingGroups,omitempty"`
}

// snapshot is one parsed version of the registry file. It is never modified after it is published, so
// readers use it without a lock.
//
// It keeps each certificate as its PEM only: a parsed x509.Certificate is about 5 KB, for every
// registered device, in the heap that every garbage collection marks (a 10,000-device registry's
// parsed certificates doubled the broker's live heap, and with it the cost of each collection during
// a burst of connects). A connect compares certificate IDs and needs no parsed form; the few callers
// that do (Certificate, CertificateByRef) parse the one they ask for.
type snapshot struct {
	data  Data
	mtime time.Time
	size  int64
}

// Registry is the registry file in the state directory. The CLI and a running broker are separate
// processes sharing it: writers take an exclusive file lock and write atomically, and readers reload the
// file when its modification time or size changes, so `ggbroker device revoke` takes effect on the next
// connect without a restart.
type Registry struct {
	path string

	// OnReloadError, if set, is told when the file changed on disk but could not be read; the registry
	// then keeps serving the last good version, so a broken hand edit does not lock every device out.
	OnReloadError func(error)

	mu        sync.Mutex
	snap      *snapshot
	failedFor time.Time // mtime of the last version that failed to load, to report it once
}

// OpenRegistry opens the registry file at path, creating an empty one if it does not exist.
func OpenRegistry(path string) (*Registry, error) {
	r := &Registry{path: path}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create registry directory: %w", err)
		}
		if err := r.Update(func(*Data) error { return nil }); err != nil {
			return nil, err
		}
	}
	if _, err := r.current(); err != nil {
		return nil, err
	}
	return r, nil
}

// Path is the registry file's path.
func (r *Registry) Path() string { return r.path }

// current returns the latest snapshot, re-reading the file if it changed on disk. It fails only when
// there is no good version at all.
func (r *Registry) current() (*snapshot, error) {
	fi, statErr := os.Stat(r.path)
	r.mu.Lock()
	defer r.mu.Unlock()
	if statErr == nil && r.snap != nil && r.snap.mtime.Equal(fi.ModTime()) && r.snap.size == fi.Size() {
		return r.snap, nil
	}
	if statErr == nil && r.snap != nil && r.failedFor.Equal(fi.ModTime()) {
		return r.snap, nil
	}
	s, err := readSnapshot(r.path)
	if err != nil {
		if r.snap == nil {
			return nil, err
		}
		if statErr == nil {
			r.failedFor = fi.ModTime()
		}
		if r.OnReloadError != nil {
			r.OnReloadError(fmt.Errorf("%w (still using the last good version)", err))
		}
		return r.snap, nil
	}
	r.snap = s
	return s, nil
}

func readSnapshot(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	d, err := ParseData(raw)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	return &snapshot{data: *d, mtime: fi.ModTime(), size: fi.Size()}, nil
}

// ParseData parses and checks registry JSON: every certificate's ID must be the SHA-256 of its PEM,
// every status known, and every attached thing registered.
func ParseData(raw []byte) (*Data, error) {
	var d Data
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if d.Things == nil {
		d.Things = map[string]*Thing{}
	}
	if d.Certificates == nil {
		d.Certificates = map[string]*Certificate{}
	}
	for name, t := range d.Things {
		if t == nil || t.Name != name {
			return nil, fmt.Errorf("thing %q: thingName must equal its key", name)
		}
	}
	for id, c := range d.Certificates {
		if c == nil {
			return nil, fmt.Errorf("certificate %s: empty entry", id)
		}
		parsed, err := certs.ParseCertsPEM([]byte(c.PEM))
		if err != nil {
			return nil, fmt.Errorf("certificate %s: certificatePem: %w", id, err)
		}
		if got := certs.Fingerprint(parsed[0]); got != id || c.ID != id {
			return nil, fmt.Errorf("certificate %s: certificateId must be the SHA-256 of the certificate (%s)", id, got)
		}
		if !c.Status.Valid() {
			return nil, fmt.Errorf("certificate %s: status %q is not ACTIVE, INACTIVE, REVOKED, PENDING_ACTIVATION, PENDING_TRANSFER or REGISTER_INACTIVE", id, c.Status)
		}
		for _, thing := range c.Things {
			if _, ok := d.Things[thing]; !ok {
				return nil, fmt.Errorf("certificate %s: attached to unknown thing %q", id, thing)
			}
		}
	}
	if err := checkGroups(&d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Thing returns the registered thing with that name.
func (r *Registry) Thing(name string) (*Thing, bool, error) {
	s, err := r.current()
	if s == nil {
		return nil, false, err
	}
	t, ok := s.data.Things[name]
	return t, ok, err
}

// CertificateRecord returns the registered certificate with that ID, nil if there is none.
func (r *Registry) CertificateRecord(id string) (*Certificate, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	return s.data.Certificates[id], err
}

// Certificate returns the registered certificate with that ID and its parsed form.
func (r *Registry) Certificate(id string) (*Certificate, *x509.Certificate, error) {
	c, err := r.CertificateRecord(id)
	if c == nil {
		return nil, nil, err
	}
	parsed, perr := c.parse()
	if perr != nil {
		return nil, nil, perr
	}
	return c, parsed, err
}

// parse is the certificate's parsed form. ParseData checked that its PEM parses when it loaded it.
func (c *Certificate) parse() (*x509.Certificate, error) {
	parsed, err := certs.ParseCertsPEM([]byte(c.PEM))
	if err != nil {
		return nil, fmt.Errorf("certificate %s: certificatePem: %w", c.ID, err)
	}
	return parsed[0], nil
}

// Things returns all registered things, sorted by name.
func (r *Registry) Things() ([]*Thing, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	out := make([]*Thing, 0, len(s.data.Things))
	for _, t := range s.data.Things {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// CertificatesOf returns the certificates attached to a thing, sorted by creation date.
func (r *Registry) CertificatesOf(thing string) ([]*Certificate, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	var out []*Certificate
	for _, c := range s.data.Certificates {
		if c.AttachedTo(thing) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// Update applies fn to the registry under an exclusive lock shared with other processes, validates the
// result and writes it atomically. If fn or validation fails, nothing is written.
func (r *Registry) Update(fn func(*Data) error) error {
	lock, err := os.OpenFile(r.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock registry: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock registry %s: %w", r.path, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file unlocks too

	d := &Data{Things: map[string]*Thing{}, Certificates: map[string]*Certificate{}}
	if raw, err := os.ReadFile(r.path); err == nil {
		if d, err = ParseData(raw); err != nil {
			return fmt.Errorf("registry %s: %w", r.path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("registry %s: %w", r.path, err)
	}
	revoked := map[string]bool{}
	for id, c := range d.Certificates {
		if c.Status == StatusRevoked {
			revoked[id] = true
		}
	}
	if err := fn(d); err != nil {
		return err
	}
	for id := range revoked {
		// AWS IoT: revocation is final; a revoked certificate can be deleted, never used again
		// (aws-iot-core/x509-client-certs.md). Checked here so every path (API, CLI) keeps it.
		if c, ok := d.Certificates[id]; ok && c.Status != StatusRevoked {
			return fmt.Errorf("%w: certificate %s is REVOKED, and a revoked certificate cannot be made %s again (register a new certificate)", ErrCertificateState, short(id), c.Status)
		}
	}
	for _, t := range d.Things {
		if t.ID == "" {
			t.ID = newUUID()
		}
		if t.Version == 0 {
			t.Version = 1
		}
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("encode registry: %w", err)
	}
	if _, err := ParseData(out); err != nil {
		return fmt.Errorf("registry update refused: %w", err)
	}
	if err := certs.WriteFileAtomic(r.path, append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("write registry %s: %w", r.path, err)
	}
	return nil
}

// Register adds (or replaces) a thing and a certificate attached to it, ACTIVE.
func (r *Registry) Register(thing Thing, cert *x509.Certificate, policies []string) (*Certificate, error) {
	id := certs.Fingerprint(cert)
	rec := &Certificate{
		ID:        id,
		PEM:       string(certs.EncodeCertsPEM(cert)),
		Status:    StatusActive,
		Things:    []string{thing.Name},
		Policies:  policies,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	err := r.Update(func(d *Data) error {
		if old, ok := d.Things[thing.Name]; ok && thing.TypeName == "" && thing.Attributes == nil {
			thing = *old
		}
		d.Things[thing.Name] = &thing
		if old, ok := d.Certificates[id]; ok {
			rec.CreatedAt = old.CreatedAt
			rec.Things = mergeNames(old.Things, rec.Things)
			rec.Policies = mergeNames(old.Policies, rec.Policies)
		}
		d.Certificates[id] = rec
		return nil
	})
	return rec, err
}

// SetStatus changes the status of every certificate selected by ref: a certificate ID (or a unique
// prefix of at least 8 characters), or a thing name (all certificates attached to it). It returns the
// IDs changed.
func (r *Registry) SetStatus(ref string, status Status) ([]string, error) {
	return r.editCertificates(ref, func(c *Certificate) { c.Status = status })
}

// resolve finds the certificates a CLI argument names.
func resolve(d *Data, ref string) ([]string, error) {
	if _, ok := d.Certificates[ref]; ok {
		return []string{ref}, nil
	}
	var ids []string
	if _, ok := d.Things[ref]; ok {
		for id, c := range d.Certificates {
			if c.AttachedTo(ref) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("thing %q has no certificates", ref)
		}
		sort.Strings(ids)
		return ids, nil
	}
	ids = matchIDs(d, ref)
	switch len(ids) {
	case 0:
		return nil, fmt.Errorf("no thing or certificate %q in the registry", ref)
	case 1:
		return ids, nil
	default:
		return nil, fmt.Errorf("certificate ID prefix %q is ambiguous (%d matches)", ref, len(ids))
	}
}

// matchIDs returns the certificate IDs ref names: the ID itself, or every ID it is a prefix of when it
// is at least 8 characters long, the way the CLI takes certificate IDs.
func matchIDs(d *Data, ref string) []string {
	if _, ok := d.Certificates[ref]; ok {
		return []string{ref}
	}
	var ids []string
	if len(ref) >= 8 {
		for id := range d.Certificates {
			if strings.HasPrefix(id, ref) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// CertificateByRef returns the one certificate ref names: its ID or a unique prefix of 8+ characters.
func (r *Registry) CertificateByRef(ref string) (*Certificate, *x509.Certificate, error) {
	s, err := r.current()
	if s == nil {
		return nil, nil, err
	}
	switch ids := matchIDs(&s.data, ref); len(ids) {
	case 0:
		return nil, nil, fmt.Errorf("no certificate %q in the registry", ref)
	case 1:
		c := s.data.Certificates[ids[0]]
		parsed, err := c.parse()
		if err != nil {
			return nil, nil, err
		}
		return c, parsed, nil
	default:
		return nil, nil, fmt.Errorf("certificate ID prefix %q is ambiguous (%d matches)", ref, len(ids))
	}
}

func mergeNames(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// AttachPolicy attaches a policy (by name) to the certificates ref selects (as in SetStatus) and
// returns their IDs.
func (r *Registry) AttachPolicy(ref, policyName string) ([]string, error) {
	return r.editCertificates(ref, func(c *Certificate) { c.Policies = mergeNames(c.Policies, []string{policyName}) })
}

// DetachPolicy detaches a policy from the certificates ref selects.
func (r *Registry) DetachPolicy(ref, policyName string) ([]string, error) {
	return r.editCertificates(ref, func(c *Certificate) {
		c.Policies = slices.DeleteFunc(c.Policies, func(n string) bool { return n == policyName })
	})
}

// editCertificates applies edit to every certificate ref selects, in one registry update.
func (r *Registry) editCertificates(ref string, edit func(*Certificate)) ([]string, error) {
	var changed []string
	err := r.Update(func(d *Data) error {
		ids, err := resolve(d, ref)
		if err != nil {
			return err
		}
		for _, id := range ids {
			edit(d.Certificates[id])
		}
		changed = ids
		return nil
	})
	return changed, err
}

// Snapshot returns the registry's current content. The result is shared: callers must not modify it.
func (r *Registry) Snapshot() (*Data, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	return &s.data, nil
}

// newUUID is a random (version 4) UUID, the form of AWS IoT's thing IDs.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// CreateThing registers a thing. As AWS IoT's CreateThing, creating a thing that exists with the same
// type and attributes returns it; with others it fails with ErrExists.
func (r *Registry) CreateThing(t Thing) (*Thing, error) {
	if err := CheckThingName(t.Name); err != nil {
		return nil, err
	}
	var out Thing
	err := r.Update(func(d *Data) error {
		if old, ok := d.Things[t.Name]; ok {
			if old.TypeName != t.TypeName || !maps.Equal(old.Attributes, t.Attributes) && (len(old.Attributes) > 0 || len(t.Attributes) > 0) {
				return fmt.Errorf("%w: thing %s exists with other attributes or type", ErrExists, t.Name)
			}
			out = *old
			return nil
		}
		t.ID, t.Version = newUUID(), 1
		d.Things[t.Name] = &t
		out = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateThing applies edit to a thing and counts a version. expectedVersion, if not 0, must be the
// thing's current version (ErrVersionConflict otherwise).
func (r *Registry) UpdateThing(name string, expectedVersion int64, edit func(*Thing) error) error {
	return r.Update(func(d *Data) error {
		t, ok := d.Things[name]
		if !ok {
			return fmt.Errorf("%w: thing %s", ErrNotFound, name)
		}
		if expectedVersion != 0 && t.Version != expectedVersion {
			return fmt.Errorf("%w: thing %s is at version %d, not %d", ErrVersionConflict, name, t.Version, expectedVersion)
		}
		cp := *t
		cp.Attributes = maps.Clone(t.Attributes)
		if err := edit(&cp); err != nil {
			return err
		}
		cp.Name, cp.ID, cp.Version = t.Name, t.ID, t.Version+1
		d.Things[name] = &cp
		return nil
	})
}

// DeleteThing removes a thing; it reports whether it existed. A thing with certificates attached is
// refused (ErrDeleteConflict), as AWS IoT refuses deleting a thing with principals.
func (r *Registry) DeleteThing(name string, expectedVersion int64) (existed bool, err error) {
	err = r.Update(func(d *Data) error {
		t, ok := d.Things[name]
		if !ok {
			return nil
		}
		if expectedVersion != 0 && t.Version != expectedVersion {
			return fmt.Errorf("%w: thing %s is at version %d, not %d", ErrVersionConflict, name, t.Version, expectedVersion)
		}
		for _, c := range d.Certificates {
			if c.AttachedTo(name) {
				return fmt.Errorf("%w: thing %s has principals attached (certificate %s): detach them first", ErrDeleteConflict, name, short(c.ID))
			}
		}
		delete(d.Things, name)
		for _, g := range d.ThingGroups {
			g.Things = slices.DeleteFunc(g.Things, func(n string) bool { return n == name })
		}
		existed = true
		return nil
	})
	return existed, err
}

// AddCertificate registers a certificate attached to nothing, with a status (and the registered CA
// that signed it, if any). A certificate already registered is ErrExists.
func (r *Registry) AddCertificate(cert *x509.Certificate, status Status, caID string) (*Certificate, error) {
	if !status.Valid() {
		return nil, fmt.Errorf("status %q is not a certificate status", status)
	}
	now := time.Now().UTC().Truncate(time.Second)
	rec := &Certificate{ID: certs.Fingerprint(cert), PEM: string(certs.EncodeCertsPEM(cert)), Status: status,
		CreatedAt: now, ModifiedAt: now, CACertificateID: caID}
	err := r.Update(func(d *Data) error {
		if _, ok := d.Certificates[rec.ID]; ok {
			return fmt.Errorf("%w: certificate %s is registered", ErrExists, rec.ID)
		}
		d.Certificates[rec.ID] = rec
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// editCertificate applies edit to the certificate with exactly that ID.
func (r *Registry) editCertificate(id string, edit func(d *Data, c *Certificate) error) error {
	return r.Update(func(d *Data) error {
		c, ok := d.Certificates[id]
		if !ok {
			return fmt.Errorf("%w: certificate %s", ErrNotFound, id)
		}
		return edit(d, c)
	})
}

// SetCertificateStatus sets the status of the certificate with exactly that ID.
func (r *Registry) SetCertificateStatus(id string, status Status) error {
	if !status.Valid() {
		return fmt.Errorf("status %q is not a certificate status", status)
	}
	return r.editCertificate(id, func(_ *Data, c *Certificate) error {
		if c.Status != status {
			c.Status, c.ModifiedAt = status, time.Now().UTC().Truncate(time.Second)
		}
		return nil
	})
}

// DeleteCertificate removes a certificate, with AWS IoT's rules: an ACTIVE one is refused
// (ErrCertificateState: deactivate it first), one attached to a thing is refused (ErrDeleteConflict),
// and one with policies attached too unless force.
func (r *Registry) DeleteCertificate(id string, force bool) error {
	return r.editCertificate(id, func(d *Data, c *Certificate) error {
		switch {
		case c.Status == StatusActive:
			return fmt.Errorf("%w: certificate %s is ACTIVE: deactivate it (INACTIVE) before deleting it", ErrCertificateState, short(id))
		case len(c.Things) > 0:
			return fmt.Errorf("%w: certificate %s is attached to thing(s) %v: detach it first", ErrDeleteConflict, short(id), c.Things)
		case len(c.Policies) > 0 && !force:
			return fmt.Errorf("%w: certificate %s has policies %v attached: detach them, or use forceDelete", ErrDeleteConflict, short(id), c.Policies)
		}
		delete(d.Certificates, id)
		return nil
	})
}

// AttachThing attaches the certificate to a thing (AWS' AttachThingPrincipal).
func (r *Registry) AttachThing(id, thing string) error {
	return r.editCertificate(id, func(d *Data, c *Certificate) error {
		if _, ok := d.Things[thing]; !ok {
			return fmt.Errorf("%w: thing %s", ErrNotFound, thing)
		}
		c.Things = mergeNames(c.Things, []string{thing})
		return nil
	})
}

// DetachThing detaches the certificate from a thing; detaching what is not attached is no error.
func (r *Registry) DetachThing(id, thing string) error {
	return r.editCertificate(id, func(d *Data, c *Certificate) error {
		if _, ok := d.Things[thing]; !ok {
			return fmt.Errorf("%w: thing %s", ErrNotFound, thing)
		}
		c.Things = slices.DeleteFunc(c.Things, func(n string) bool { return n == thing })
		return nil
	})
}

// SetCertificatePolicy attaches (or detaches) a policy to the certificate with exactly that ID.
func (r *Registry) SetCertificatePolicy(id, policy string, attached bool) error {
	return r.editCertificate(id, func(_ *Data, c *Certificate) error {
		if attached {
			c.Policies = mergeNames(c.Policies, []string{policy})
		} else {
			c.Policies = slices.DeleteFunc(c.Policies, func(n string) bool { return n == policy })
		}
		return nil
	})
}

// Certificates returns every registered certificate, oldest first (then by ID).
func (r *Registry) Certificates() ([]*Certificate, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	out := make([]*Certificate, 0, len(s.data.Certificates))
	for _, c := range s.data.Certificates {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}
