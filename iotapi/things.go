package iotapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/ggbroker/ggbroker/auth"
)

// AWS IoT's attribute rules (botocore's iot model: AttributeName, AttributeValue).
var typeNamePattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

type attributePayload struct {
	Attributes map[string]string `json:"attributes"`
	Merge      bool              `json:"merge"`
}

// apply returns attrs updated by the payload, as UpdateThing and UpdateThingGroup do: without merge
// the payload replaces them; with merge it adds to them, and an empty value removes the attribute
// (botocore's AttributePayload doc). No attributes at all is nil. The result is checked.
func (p *attributePayload) apply(attrs map[string]string) (map[string]string, error) {
	if !p.Merge || attrs == nil {
		attrs = map[string]string{}
	}
	for k, v := range p.Attributes {
		if p.Merge && v == "" {
			delete(attrs, k)
		} else {
			attrs[k] = v
		}
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	return attrs, checkAttributes(attrs)
}

func checkAttributes(attrs map[string]string) error {
	if err := auth.CheckAttributes(attrs); err != nil {
		return invalid("%v", err)
	}
	return nil
}

func thingName(r *http.Request) (string, error) {
	name := r.PathValue("thingName")
	if err := auth.CheckThingName(name); err != nil {
		return "", invalid("%v", err)
	}
	return name, nil
}

// thingID is the thing's ID; a thing stored before IDs were (by an older ggbroker) gets a stable one
// made from its name.
func thingID(t *auth.Thing) string {
	if t.ID != "" {
		return t.ID
	}
	sum := sha256.Sum256([]byte(t.Name))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func version(t *auth.Thing) int64 { return max(t.Version, 1) }

func (s *Service) createThing(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	var in struct {
		ThingTypeName    string           `json:"thingTypeName"`
		AttributePayload attributePayload `json:"attributePayload"`
		BillingGroupName string           `json:"billingGroupName"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.BillingGroupName != "" {
		return invalid("billing groups are not supported by ggbroker")
	}
	if in.ThingTypeName != "" && !typeNamePattern.MatchString(in.ThingTypeName) {
		return invalid("thingTypeName %q must be 1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-'", in.ThingTypeName)
	}
	if err := checkAttributes(in.AttributePayload.Attributes); err != nil {
		return err
	}
	t, err := s.state.Registry.CreateThing(auth.Thing{Name: name, TypeName: in.ThingTypeName, Attributes: in.AttributePayload.Attributes})
	if err != nil {
		if e := fromRegistry(err); e != nil {
			if ae, ok := e.(*apiError); ok && ae.typ == errResourceAlreadyExists {
				ae.fields = map[string]any{"resourceId": name, "resourceArn": s.arn("thing", name)}
				ae.msg = "Thing " + name + " already exists in account with different attributes"
			}
			return e
		}
	}
	return ok(w, map[string]any{"thingName": t.Name, "thingArn": s.arn("thing", t.Name), "thingId": thingID(t)})
}

func (s *Service) thing(name string) (*auth.Thing, error) {
	t, found, err := s.state.Registry.Thing(name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fail(errResourceNotFound, "Thing %s cannot be found.", name)
	}
	return t, nil
}

func (s *Service) describeThing(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	t, err := s.thing(name)
	if err != nil {
		return err
	}
	out := map[string]any{"defaultClientId": t.Name, "thingName": t.Name, "thingId": thingID(t), "thingArn": s.arn("thing", t.Name),
		"attributes": attributesOf(t), "version": version(t)}
	if t.TypeName != "" {
		out["thingTypeName"] = t.TypeName
	}
	return ok(w, out)
}

func attributesOf(t *auth.Thing) map[string]string {
	if t.Attributes == nil {
		return map[string]string{}
	}
	return t.Attributes
}

func (s *Service) listThings(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	attrName, attrValue, typeName := q.Get("attributeName"), q.Get("attributeValue"), q.Get("thingTypeName")
	prefix, err := queryBool(r, "usePrefixAttributeValue")
	if err != nil {
		return err
	}
	if prefix && (attrName == "" || attrValue == "") {
		return invalid("usePrefixAttributeValue needs attributeName and attributeValue")
	}
	all, err := s.state.Registry.Things()
	if err != nil {
		return err
	}
	var sel []*auth.Thing
	for _, t := range all {
		if typeName != "" && t.TypeName != typeName {
			continue
		}
		if attrName != "" {
			v, has := t.Attributes[attrName]
			if !has || attrValue != "" && (prefix && !strings.HasPrefix(v, attrValue) || !prefix && v != attrValue) {
				continue
			}
		}
		sel = append(sel, t)
	}
	p, err := paginate(r, len(sel), "nextToken", "maxResults", 50, 250)
	if err != nil {
		return err
	}
	things := make([]map[string]any, 0, p.end-p.start)
	for _, t := range sel[p.start:p.end] {
		e := map[string]any{"thingName": t.Name, "thingArn": s.arn("thing", t.Name), "attributes": attributesOf(t), "version": version(t)}
		if t.TypeName != "" {
			e["thingTypeName"] = t.TypeName
		}
		things = append(things, e)
	}
	out := map[string]any{"things": things}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}

func (s *Service) updateThing(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	var in struct {
		ThingTypeName    string            `json:"thingTypeName"`
		AttributePayload *attributePayload `json:"attributePayload"`
		ExpectedVersion  int64             `json:"expectedVersion"`
		RemoveThingType  bool              `json:"removeThingType"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.RemoveThingType && in.ThingTypeName != "" {
		return invalid("removeThingType and thingTypeName cannot both be given")
	}
	if in.ThingTypeName != "" && !typeNamePattern.MatchString(in.ThingTypeName) {
		return invalid("thingTypeName %q must be 1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-'", in.ThingTypeName)
	}
	if in.AttributePayload != nil {
		if err := checkAttributes(in.AttributePayload.Attributes); err != nil {
			return err
		}
	}
	err = s.state.Registry.UpdateThing(name, in.ExpectedVersion, func(t *auth.Thing) error {
		switch {
		case in.RemoveThingType:
			t.TypeName = ""
		case in.ThingTypeName != "":
			t.TypeName = in.ThingTypeName
		}
		if p := in.AttributePayload; p != nil {
			var err error
			t.Attributes, err = p.apply(t.Attributes)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ok(w, map[string]any{})
}

func (s *Service) deleteThing(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	var expected int64
	if v := r.URL.Query().Get("expectedVersion"); v != "" {
		if expected, err = strconv.ParseInt(v, 10, 64); err != nil {
			return invalid("expectedVersion %q is not a number", v)
		}
	}
	// AWS answers 200 for a thing that does not exist (botocore's DeleteThing doc).
	if _, err := s.state.Registry.DeleteThing(name, expected); err != nil {
		if fe, isAPI := fromRegistry(err).(*apiError); isAPI && fe.typ == errDeleteConflict {
			return invalid("Cannot delete thing %s: %s", name, err)
		}
		return err
	}
	return ok(w, map[string]any{})
}
