package auth

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// ThingGroup is a static thing group: a named set of things, with the policies attached to it. A
// policy attached to a group applies to a connection that acts as a thing in it: AWS IoT applies
// thing group policies to a device that connects with its thing name as client ID, from a certificate
// attached to that thing (AWS IoT Developer Guide, "Static thing groups"; not in reference/), the
// condition under which the thing policy variables resolve too (aws-iot-core/thing-policy-variables.md).
// Groups have no parents here (no hierarchy, so nothing is inherited) and no dynamic membership.
type ThingGroup struct {
	Name        string            `json:"thingGroupName"`
	ID          string            `json:"thingGroupId"`
	Description string            `json:"description,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	// Version counts the group's updates, from 1 (DescribeThingGroup's version).
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"creationDate"`
	// Things are the member things' names, sorted; Policies the attached policies' names.
	Things   []string `json:"things,omitempty"`
	Policies []string `json:"policies,omitempty"`
}

// Has reports whether the thing is in the group.
func (g *ThingGroup) Has(thing string) bool {
	return slices.Contains(g.Things, thing)
}

// GroupsOf returns the names of the groups the thing is in, sorted.
func (d *Data) GroupsOf(thing string) []string {
	var out []string
	for name, g := range d.ThingGroups {
		if g.Has(thing) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// checkGroups is ParseData's part for thing groups: names match keys and members are registered.
func checkGroups(d *Data) error {
	for name, g := range d.ThingGroups {
		if g == nil || g.Name != name {
			return fmt.Errorf("thing group %q: thingGroupName must equal its key", name)
		}
		for _, t := range g.Things {
			if _, ok := d.Things[t]; !ok {
				return fmt.Errorf("thing group %s: member %q is not a registered thing", name, t)
			}
		}
	}
	return nil
}

// ThingGroup returns the thing group with that name.
func (r *Registry) ThingGroup(name string) (*ThingGroup, bool, error) {
	s, err := r.current()
	if s == nil {
		return nil, false, err
	}
	g, ok := s.data.ThingGroups[name]
	return g, ok, err
}

// ThingGroups returns every thing group, sorted by name.
func (r *Registry) ThingGroups() ([]*ThingGroup, error) {
	s, err := r.current()
	if s == nil {
		return nil, err
	}
	out := make([]*ThingGroup, 0, len(s.data.ThingGroups))
	for _, g := range s.data.ThingGroups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// CreateThingGroup creates a group. As AWS IoT's CreateThingGroup, creating one that exists with the
// same description and attributes returns it; with others it fails with ErrExists.
func (r *Registry) CreateThingGroup(g ThingGroup) (*ThingGroup, error) {
	if err := CheckThingName(g.Name); err != nil {
		return nil, fmt.Errorf("thing group name: %w", err)
	}
	var out ThingGroup
	err := r.Update(func(d *Data) error {
		if old, ok := d.ThingGroups[g.Name]; ok {
			if old.Description != g.Description || !maps.Equal(old.Attributes, g.Attributes) && (len(old.Attributes) > 0 || len(g.Attributes) > 0) {
				return fmt.Errorf("%w: thing group %s exists with another description or attributes", ErrExists, g.Name)
			}
			out = *old
			return nil
		}
		g.ID, g.Version, g.CreatedAt = newUUID(), 1, time.Now().UTC().Truncate(time.Millisecond)
		g.Things, g.Policies = nil, nil
		if d.ThingGroups == nil {
			d.ThingGroups = map[string]*ThingGroup{}
		}
		d.ThingGroups[g.Name] = &g
		out = g
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateThingGroup applies edit to a group's description and attributes and counts a version, and
// returns the new version. expectedVersion, if not 0, must be the group's current version.
func (r *Registry) UpdateThingGroup(name string, expectedVersion int64, edit func(*ThingGroup) error) (int64, error) {
	var version int64
	err := r.editGroup(name, func(_ *Data, g *ThingGroup) error {
		if expectedVersion != 0 && g.Version != expectedVersion {
			return fmt.Errorf("%w: thing group %s is at version %d, not %d", ErrVersionConflict, name, g.Version, expectedVersion)
		}
		cp := *g
		cp.Attributes = maps.Clone(g.Attributes)
		if err := edit(&cp); err != nil {
			return err
		}
		g.Description, g.Attributes = cp.Description, cp.Attributes
		g.Version++
		version = g.Version
		return nil
	})
	return version, err
}

// DeleteThingGroup removes a group (its things stay; the policies attached to it no longer apply to
// them); it reports whether it existed. expectedVersion, if not 0, must be the group's version.
func (r *Registry) DeleteThingGroup(name string, expectedVersion int64) (existed bool, err error) {
	err = r.Update(func(d *Data) error {
		g, ok := d.ThingGroups[name]
		if !ok {
			return nil
		}
		if expectedVersion != 0 && g.Version != expectedVersion {
			return fmt.Errorf("%w: thing group %s is at version %d, not %d", ErrVersionConflict, name, g.Version, expectedVersion)
		}
		delete(d.ThingGroups, name)
		existed = true
		return nil
	})
	return existed, err
}

// SetGroupMember adds the thing to the group (member true) or removes it; either is idempotent.
func (r *Registry) SetGroupMember(group, thing string, member bool) error {
	return r.editGroup(group, func(d *Data, g *ThingGroup) error {
		if _, ok := d.Things[thing]; !ok {
			return fmt.Errorf("%w: thing %s", ErrNotFound, thing)
		}
		if member {
			g.Things = mergeNames(g.Things, []string{thing})
			slices.Sort(g.Things)
		} else {
			g.Things = slices.DeleteFunc(g.Things, func(n string) bool { return n == thing })
		}
		return nil
	})
}

// SetGroupPolicy attaches (or detaches) a policy to the group.
func (r *Registry) SetGroupPolicy(group, policy string, attached bool) error {
	return r.editGroup(group, func(_ *Data, g *ThingGroup) error {
		if attached {
			g.Policies = mergeNames(g.Policies, []string{policy})
		} else {
			g.Policies = slices.DeleteFunc(g.Policies, func(n string) bool { return n == policy })
		}
		return nil
	})
}

func (r *Registry) editGroup(name string, edit func(d *Data, g *ThingGroup) error) error {
	return r.Update(func(d *Data) error {
		g, ok := d.ThingGroups[name]
		if !ok {
			return fmt.Errorf("%w: thing group %s", ErrNotFound, name)
		}
		return edit(d, g)
	})
}
