package provisioning

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// ErrResourceConflict is a FAIL override that met an existing resource (AWS' ResourceConflictsException).
var ErrResourceConflict = errors.New("resource conflict")

// Result is what Apply made: the thing (AWS answers its name to the device) and the device
// configuration.
type Result struct {
	ThingName           string
	CertificateID       string
	Policies            []string
	DeviceConfiguration map[string]string
}

// Apply makes what the plan says, in AWS' RegisterThing order (thing, policies, attachments, status).
// It is all or nothing: the registry changes in one update, and policy files it wrote are removed if
// that update fails, so a template that cannot run leaves nothing half-made.
func (p *Plan) Apply(reg *auth.Registry, policyDir string) (*Result, error) {
	if p.CertificateID == "" {
		return nil, errors.New("the template provisions no certificate")
	}
	res := &Result{CertificateID: p.CertificateID, DeviceConfiguration: p.DeviceConfiguration}
	if p.Thing != nil {
		if err := auth.CheckThingName(p.Thing.Name); err != nil {
			return nil, err
		}
		res.ThingName = p.Thing.Name
	}
	var written []string
	rollback := func() {
		for _, f := range written {
			_ = os.Remove(f)
		}
	}
	for _, pp := range p.Policies {
		name := pp.Name
		if pp.Document != "" {
			if !pp.named {
				// AWS names an unnamed policy by a hash of its document (TPL, Policy resources).
				sum := sha256.Sum256([]byte(pp.Document))
				name = hex.EncodeToString(sum[:])
			}
			if _, err := policy.ParseDocument(name, []byte(pp.Document)); err != nil {
				rollback()
				return nil, fmt.Errorf("policy %s: %w", name, err)
			}
			path := state.PolicyPath(policyDir, name)
			old, err := os.ReadFile(path)
			switch {
			case err == nil && !bytes.Equal(old, []byte(pp.Document)):
				rollback()
				return nil, fmt.Errorf("%w: policy %s exists with another document", ErrResourceConflict, name)
			case errors.Is(err, os.ErrNotExist):
				if err := os.MkdirAll(policyDir, 0o700); err != nil {
					rollback()
					return nil, err
				}
				if err := certs.WriteFileAtomic(path, []byte(pp.Document), 0o644); err != nil {
					rollback()
					return nil, fmt.Errorf("write policy %s: %w", name, err)
				}
				written = append(written, path)
			case err != nil:
				rollback()
				return nil, err
			}
		} else if _, err := os.Stat(state.PolicyPath(policyDir, name)); err != nil {
			rollback()
			return nil, fmt.Errorf("policy %s does not exist (a PolicyName without PolicyDocument names an existing policy)", name)
		}
		res.Policies = append(res.Policies, name)
	}
	err := reg.Update(func(d *auth.Data) error {
		c, ok := d.Certificates[p.CertificateID]
		if !ok {
			return fmt.Errorf("certificate %s is not registered", p.CertificateID)
		}
		if th := p.Thing; th != nil {
			_, existed := d.Things[th.Name]
			if err := applyThing(d, th); err != nil {
				return err
			}
			if err := applyGroups(d, th, existed); err != nil {
				return err
			}
			if !c.AttachedTo(th.Name) {
				c.Things = append(c.Things, th.Name)
			}
		}
		for _, name := range res.Policies {
			if !slices.Contains(c.Policies, name) {
				c.Policies = append(c.Policies, name)
			}
		}
		status := auth.Status(p.CertificateStatus)
		// The certificate being provisioned (PENDING_ACTIVATION) always gets the template's status;
		// OverrideSettings.Status decides for one that was in use already.
		switch {
		case c.Status == auth.StatusPendingActivation || c.Status == status:
			c.Status = status
		case p.certOverride == overrideFail:
			return fmt.Errorf("%w: certificate %s is %s (OverrideSettings.Status FAIL)", ErrResourceConflict, p.CertificateID, c.Status)
		case p.certOverride == overrideDoNothing:
		default:
			c.Status = status
		}
		return nil
	})
	if err != nil {
		rollback()
		return nil, err
	}
	return res, nil
}

// applyGroups puts the thing in the template's ThingGroups, which must exist (ggbroker's are static
// groups made with CreateThingGroup). A thing that existed before keeps its groups unless
// OverrideSettings.ThingGroups says otherwise: REPLACE makes them the template's, MERGE adds the
// template's, FAIL refuses (ResourceConflictsException) when they differ from the template's
// (aws-iot-core/provision-template.md, "Override settings").
func applyGroups(d *auth.Data, th *ThingPlan, existed bool) error {
	for _, g := range th.Groups {
		if _, ok := d.ThingGroups[g]; !ok {
			return fmt.Errorf("%s.ThingGroups: thing group %q does not exist (create it with CreateThingGroup)", th.Name, g)
		}
	}
	current := d.GroupsOf(th.Name)
	want := slices.Sorted(slices.Values(th.Groups))
	want = slices.Compact(want)
	if existed {
		switch th.override["THINGGROUPS"] {
		case overrideFail:
			if !slices.Equal(current, want) {
				return fmt.Errorf("%w: thing %s is in thing groups %v, not the template's %v (OverrideSettings.ThingGroups FAIL)", ErrResourceConflict, th.Name, current, want)
			}
			return nil
		case overrideReplace:
			for _, g := range current {
				if !slices.Contains(want, g) {
					grp := d.ThingGroups[g]
					grp.Things = slices.DeleteFunc(grp.Things, func(n string) bool { return n == th.Name })
				}
			}
		case overrideMerge:
		default: // DO_NOTHING
			return nil
		}
	}
	for _, g := range want {
		grp := d.ThingGroups[g]
		if !grp.Has(th.Name) {
			grp.Things = append(grp.Things, th.Name)
			slices.Sort(grp.Things)
		}
	}
	return nil
}

// applyThing creates the thing, or changes an existing one as its OverrideSettings say (default
// DO_NOTHING).
func applyThing(d *auth.Data, th *ThingPlan) error {
	old, exists := d.Things[th.Name]
	if !exists {
		d.Things[th.Name] = &auth.Thing{Name: th.Name, TypeName: th.TypeName, Attributes: th.Attributes}
		return nil
	}
	t := *old
	t.Attributes = maps.Clone(old.Attributes)
	switch th.override["ATTRIBUTEPAYLOAD"] {
	case overrideFail:
		if !maps.Equal(old.Attributes, th.Attributes) {
			return fmt.Errorf("%w: thing %s exists with other attributes (OverrideSettings.AttributePayload FAIL)", ErrResourceConflict, th.Name)
		}
	case overrideReplace:
		t.Attributes = th.Attributes
	case overrideMerge:
		if t.Attributes == nil {
			t.Attributes = map[string]string{}
		}
		maps.Copy(t.Attributes, th.Attributes)
	}
	switch th.override["THINGTYPENAME"] {
	case overrideFail:
		if old.TypeName != th.TypeName {
			return fmt.Errorf("%w: thing %s exists with type %q (OverrideSettings.ThingTypeName FAIL)", ErrResourceConflict, th.Name, old.TypeName)
		}
	case overrideReplace:
		t.TypeName = th.TypeName
	}
	if t.TypeName != old.TypeName || !maps.Equal(t.Attributes, old.Attributes) {
		t.Version++
	}
	d.Things[th.Name] = &t
	return nil
}
