package iotapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ggbroker/ggbroker/auth"
)

// Static thing groups (botocore's iot model: CreateThingGroup ... ListThingGroupsForThing), kept in
// the registry. A policy attached to a group (AttachPolicy with a thinggroup ARN) applies to the
// things in it; see auth.ThingGroup. Hierarchies (parentGroupName), dynamic groups and tags are
// refused or ignored as the README says.

type thingGroupProperties struct {
	Description      string            `json:"thingGroupDescription"`
	AttributePayload *attributePayload `json:"attributePayload"`
}

func (s *Service) thingGroupRoutes() []route {
	iot := func(pattern, name string, fn func(http.ResponseWriter, *http.Request) error) route {
		return route{"iot", pattern, name, fn}
	}
	return []route{
		iot("POST /thing-groups/{thingGroupName}", "CreateThingGroup", s.createThingGroup),
		iot("GET /thing-groups/{thingGroupName}", "DescribeThingGroup", s.describeThingGroup),
		iot("GET /thing-groups", "ListThingGroups", s.listThingGroups),
		iot("PATCH /thing-groups/{thingGroupName}", "UpdateThingGroup", s.updateThingGroup),
		iot("DELETE /thing-groups/{thingGroupName}", "DeleteThingGroup", s.deleteThingGroup),
		iot("PUT /thing-groups/addThingToThingGroup", "AddThingToThingGroup", s.groupMember(true)),
		iot("PUT /thing-groups/removeThingFromThingGroup", "RemoveThingFromThingGroup", s.groupMember(false)),
		iot("GET /thing-groups/{thingGroupName}/things", "ListThingsInThingGroup", s.listThingsInThingGroup),
		iot("GET /things/{thingName}/thing-groups", "ListThingGroupsForThing", s.listThingGroupsForThing),
	}
}

func groupName(r *http.Request) (string, error) {
	name := r.PathValue("thingGroupName")
	if err := auth.CheckThingName(name); err != nil {
		return "", invalid("thing group name %q: use 1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-'", name)
	}
	return name, nil
}

func (s *Service) thingGroup(name string) (*auth.ThingGroup, error) {
	g, found, err := s.state.Registry.ThingGroup(name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fail(errResourceNotFound, "Thing Group %s does not exist", name)
	}
	return g, nil
}

func (s *Service) createThingGroup(w http.ResponseWriter, r *http.Request) error {
	name, err := groupName(r)
	if err != nil {
		return err
	}
	var in struct {
		ParentGroupName string               `json:"parentGroupName"`
		Properties      thingGroupProperties `json:"thingGroupProperties"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.ParentGroupName != "" {
		return invalid("thing group hierarchies (parentGroupName) are not supported by ggbroker")
	}
	g := auth.ThingGroup{Name: name, Description: in.Properties.Description}
	if p := in.Properties.AttributePayload; p != nil {
		if err := checkAttributes(p.Attributes); err != nil {
			return err
		}
		g.Attributes = p.Attributes
	}
	out, err := s.state.Registry.CreateThingGroup(g)
	if err != nil {
		if ae, isAPI := fromRegistry(err).(*apiError); isAPI && ae.typ == errResourceAlreadyExists {
			ae.fields = map[string]any{"resourceId": name, "resourceArn": s.arn("thinggroup", name)}
			return ae
		}
		return err
	}
	return ok(w, map[string]any{"thingGroupName": out.Name, "thingGroupArn": s.arn("thinggroup", out.Name), "thingGroupId": out.ID})
}

func (s *Service) describeThingGroup(w http.ResponseWriter, r *http.Request) error {
	name, err := groupName(r)
	if err != nil {
		return err
	}
	g, err := s.thingGroup(name)
	if err != nil {
		return err
	}
	attrs := g.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	props := map[string]any{"attributePayload": map[string]any{"attributes": attrs}}
	if g.Description != "" {
		props["thingGroupDescription"] = g.Description
	}
	return ok(w, map[string]any{
		"thingGroupName": g.Name, "thingGroupId": g.ID, "thingGroupArn": s.arn("thinggroup", g.Name), "version": g.Version,
		"thingGroupProperties": props,
		"thingGroupMetadata":   map[string]any{"creationDate": epoch(g.CreatedAt), "rootToParentThingGroups": []any{}},
	})
}

// groupRefs answers groups as ListThingGroups and ListThingGroupsForThing do: groupName and groupArn.
func (s *Service) groupRefs(w http.ResponseWriter, r *http.Request, names []string) error {
	p, err := paginate(r, len(names), "nextToken", "maxResults", 25, 250)
	if err != nil {
		return err
	}
	list := make([]map[string]string, 0, p.end-p.start)
	for _, n := range names[p.start:p.end] {
		list = append(list, map[string]string{"groupName": n, "groupArn": s.arn("thinggroup", n)})
	}
	out := map[string]any{"thingGroups": list}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}

func (s *Service) listThingGroups(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	all, err := s.state.Registry.ThingGroups()
	if err != nil {
		return err
	}
	var names []string
	if q.Get("parentGroup") == "" { // no group has a parent
		for _, g := range all {
			if strings.HasPrefix(g.Name, q.Get("namePrefixFilter")) {
				names = append(names, g.Name)
			}
		}
	}
	return s.groupRefs(w, r, names)
}

func (s *Service) updateThingGroup(w http.ResponseWriter, r *http.Request) error {
	name, err := groupName(r)
	if err != nil {
		return err
	}
	var in struct {
		Properties      thingGroupProperties `json:"thingGroupProperties"`
		ExpectedVersion int64                `json:"expectedVersion"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	version, err := s.state.Registry.UpdateThingGroup(name, in.ExpectedVersion, func(g *auth.ThingGroup) error {
		g.Description = in.Properties.Description
		if p := in.Properties.AttributePayload; p != nil {
			var err error
			g.Attributes, err = p.apply(g.Attributes)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ok(w, map[string]any{"version": version})
}

func (s *Service) deleteThingGroup(w http.ResponseWriter, r *http.Request) error {
	name, err := groupName(r)
	if err != nil {
		return err
	}
	var expected int64
	if v := r.URL.Query().Get("expectedVersion"); v != "" {
		if expected, err = strconv.ParseInt(v, 10, 64); err != nil {
			return invalid("expectedVersion %q is not a number", v)
		}
	}
	// As DeleteThing, deleting a group that does not exist is not an error.
	if _, err := s.state.Registry.DeleteThingGroup(name, expected); err != nil {
		return err
	}
	return ok(w, map[string]any{})
}

// groupMember serves AddThingToThingGroup (add) and RemoveThingFromThingGroup: the group and the
// thing by name or by ARN.
func (s *Service) groupMember(add bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			GroupName string `json:"thingGroupName"`
			GroupArn  string `json:"thingGroupArn"`
			ThingName string `json:"thingName"`
			ThingArn  string `json:"thingArn"`
		}
		if err := decode(r, &in); err != nil {
			return err
		}
		group, thing := nameOrArn(in.GroupName, in.GroupArn, "thinggroup/"), nameOrArn(in.ThingName, in.ThingArn, "thing/")
		if group == "" || thing == "" {
			return invalid("give thingGroupName or thingGroupArn, and thingName or thingArn")
		}
		if _, err := s.thingGroup(group); err != nil {
			return err
		}
		if _, err := s.thing(thing); err != nil {
			return err
		}
		if err := s.state.Registry.SetGroupMember(group, thing, add); err != nil {
			return err
		}
		return ok(w, map[string]any{})
	}
}

// nameOrArn is name, or the resource name at the end of arn (after kind, "thing/").
func nameOrArn(name, arn, kind string) string {
	if name != "" {
		return name
	}
	if i := strings.LastIndex(arn, ":"+kind); i >= 0 {
		return arn[i+1+len(kind):]
	}
	return ""
}

func (s *Service) listThingsInThingGroup(w http.ResponseWriter, r *http.Request) error {
	name, err := groupName(r)
	if err != nil {
		return err
	}
	g, err := s.thingGroup(name)
	if err != nil {
		return err
	}
	p, err := paginate(r, len(g.Things), "nextToken", "maxResults", 25, 250)
	if err != nil {
		return err
	}
	things := g.Things[p.start:p.end]
	if things == nil {
		things = []string{}
	}
	out := map[string]any{"things": things}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}

func (s *Service) listThingGroupsForThing(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	if _, err := s.thing(name); err != nil {
		return err
	}
	d, err := s.state.Registry.Snapshot()
	if err != nil {
		return err
	}
	return s.groupRefs(w, r, d.GroupsOf(name))
}
