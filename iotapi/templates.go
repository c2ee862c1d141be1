package iotapi

import (
	"net/http"
	"regexp"

	"github.com/ggbroker/ggbroker/provisioning"
)

// templateNamePattern is botocore's TemplateName rule.
var templateNamePattern = regexp.MustCompile(`^[0-9A-Za-z_-]{1,36}$`)

func (s *Service) templateArn(name string) string { return s.arn("provisioningtemplate", name) }

func (s *Service) createProvisioningTemplate(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		TemplateName        string             `json:"templateName"`
		Description         string             `json:"description"`
		TemplateBody        string             `json:"templateBody"`
		Enabled             bool               `json:"enabled"`
		ProvisioningRoleArn string             `json:"provisioningRoleArn"`
		PreProvisioningHook *provisioning.Hook `json:"preProvisioningHook"`
		Type                string             `json:"type"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if !templateNamePattern.MatchString(in.TemplateName) {
		return invalid("templateName %q must be 1 to 36 characters of 0-9, A-Z, a-z, '_' and '-'", in.TemplateName)
	}
	if in.ProvisioningRoleArn == "" {
		return invalid("provisioningRoleArn is required (any role ARN: it is kept, not assumed, offline)")
	}
	switch in.Type {
	case "":
		in.Type = provisioning.TypeFleet
	case provisioning.TypeFleet, provisioning.TypeJITP:
	default:
		return invalid("type %q is not FLEET_PROVISIONING or JITP", in.Type)
	}
	if len(in.TemplateBody) == 0 || len(in.TemplateBody) > provisioning.MaxTemplateBody {
		return invalid("templateBody must be 1 to %d characters", provisioning.MaxTemplateBody)
	}
	if _, err := provisioning.ParseTemplate(in.TemplateBody, in.Type); err != nil {
		return invalid("templateBody: %v", err)
	}
	if in.PreProvisioningHook != nil && in.Type == provisioning.TypeJITP {
		return invalid("preProvisioningHook is for fleet provisioning templates only")
	}
	t := &provisioning.Template{Name: in.TemplateName, Description: in.Description, Body: in.TemplateBody, Enabled: in.Enabled,
		RoleArn: in.ProvisioningRoleArn, Type: in.Type, Hook: in.PreProvisioningHook}
	if err := s.catalog.AddTemplate(t); err != nil {
		if e := fromCatalog(err); e != nil {
			if ae, isAPI := e.(*apiError); isAPI && ae.typ == errResourceAlreadyExists {
				ae.fields = map[string]any{"resourceId": t.Name, "resourceArn": s.templateArn(t.Name)}
			}
			return e
		}
	}
	return ok(w, map[string]any{"templateArn": s.templateArn(t.Name), "templateName": t.Name, "defaultVersionId": t.Version})
}

func (s *Service) templateFromPath(r *http.Request) (*provisioning.Template, error) {
	name := r.PathValue("templateName")
	if !templateNamePattern.MatchString(name) {
		return nil, invalid("templateName %q must be 1 to 36 characters of 0-9, A-Z, a-z, '_' and '-'", name)
	}
	t, err := s.catalog.Template(name)
	return t, fromCatalog(err)
}

func (s *Service) describeProvisioningTemplate(w http.ResponseWriter, r *http.Request) error {
	t, err := s.templateFromPath(r)
	if err != nil {
		return err
	}
	out := map[string]any{"templateArn": s.templateArn(t.Name), "templateName": t.Name, "description": t.Description,
		"creationDate": epoch(t.CreatedAt), "lastModifiedDate": epoch(t.ModifiedAt), "defaultVersionId": t.Version,
		"templateBody": t.Body, "enabled": t.Enabled, "provisioningRoleArn": t.RoleArn, "type": t.Type}
	if t.Hook != nil {
		out["preProvisioningHook"] = t.Hook
	}
	return ok(w, out)
}

func (s *Service) listProvisioningTemplates(w http.ResponseWriter, r *http.Request) error {
	all := s.catalog.Templates()
	p, err := paginate(r, len(all), "nextToken", "maxResults", 25, 250)
	if err != nil {
		return err
	}
	list := make([]map[string]any, 0, p.end-p.start)
	for _, t := range all[p.start:p.end] {
		list = append(list, map[string]any{"templateArn": s.templateArn(t.Name), "templateName": t.Name, "description": t.Description,
			"creationDate": epoch(t.CreatedAt), "lastModifiedDate": epoch(t.ModifiedAt), "enabled": t.Enabled, "type": t.Type})
	}
	out := map[string]any{"templates": list}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}

func (s *Service) deleteProvisioningTemplate(w http.ResponseWriter, r *http.Request) error {
	t, err := s.templateFromPath(r)
	if err != nil {
		return err
	}
	if err := s.catalog.DeleteTemplate(t.Name); err != nil {
		return fromCatalog(err)
	}
	return ok(w, nil)
}
