package iotapi

import (
	"net/http"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/state"
)

// Greengrass V2's client-device association and connectivity operations (botocore's greengrassv2
// model, signing name greengrass). They are kept in the state directory (state.Greengrass), where
// discovery reads them: a device associated here discovers its core, and the connectivity set here is
// what discovery answers (see the README).
const errValidation = "ValidationException"

type association struct {
	ThingName string  `json:"thingName"`
	Timestamp float64 `json:"associationTimestamp"`
}

func (s *Service) greengrassRoutes() []route {
	gg := func(pattern, name string, fn func(http.ResponseWriter, *http.Request) error) route {
		return route{"greengrass", pattern, name, fn}
	}
	const core = "/greengrass/v2/coreDevices/{coreDeviceThingName}/"
	return []route{
		gg("POST "+core+"associateClientDevices", "BatchAssociateClientDeviceWithCoreDevice", s.associate(true)),
		gg("POST "+core+"disassociateClientDevices", "BatchDisassociateClientDeviceFromCoreDevice", s.associate(false)),
		gg("GET "+core+"associatedClientDevices", "ListClientDevicesAssociatedWithCoreDevice", s.listAssociated),
		gg("GET /greengrass/things/{thingName}/connectivityInfo", "GetConnectivityInfo", s.getConnectivityInfo),
		gg("PUT /greengrass/things/{thingName}/connectivityInfo", "UpdateConnectivityInfo", s.updateConnectivityInfo),
	}
}

// coreDevice is the core device a path names: this broker's core (core.thingName) or a registered
// thing; anything else is ResourceNotFoundException, as for a core device AWS does not know.
func (s *Service) coreDevice(name string) (string, error) {
	if name == s.core.Core.ThingName {
		return name, nil
	}
	if err := auth.CheckThingName(name); err != nil {
		return "", fail(errValidation, "%v", err)
	}
	if _, found, err := s.state.Registry.Thing(name); err != nil {
		return "", err
	} else if !found {
		return "", fail(errResourceNotFound, "core device %s does not exist", name)
	}
	return name, nil
}

func (s *Service) associate(add bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		core, err := s.coreDevice(r.PathValue("coreDeviceThingName"))
		if err != nil {
			return err
		}
		var in struct {
			Entries []struct {
				ThingName string `json:"thingName"`
			} `json:"entries"`
		}
		if err := decode(r, &in); err != nil {
			return fail(errValidation, "%s", err.(*apiError).msg)
		}
		if len(in.Entries) < 1 || len(in.Entries) > 100 {
			return fail(errValidation, "entries must hold 1 to 100 client devices, got %d", len(in.Entries))
		}
		errorEntries := []map[string]string{}
		var things []string
		for _, e := range in.Entries {
			_, found, err := s.state.Registry.Thing(e.ThingName)
			if err != nil {
				return err
			}
			if !found {
				errorEntries = append(errorEntries, map[string]string{"thingName": e.ThingName, "code": "ResourceNotFoundException", "message": "thing " + e.ThingName + " does not exist"})
				continue
			}
			things = append(things, e.ThingName)
		}
		if add {
			err = s.state.Greengrass.Associate(core, things, time.Now())
		} else {
			err = s.state.Greengrass.Disassociate(core, things)
		}
		if err != nil {
			return err
		}
		return ok(w, map[string]any{"errorEntries": errorEntries})
	}
}

func (s *Service) listAssociated(w http.ResponseWriter, r *http.Request) error {
	core, err := s.coreDevice(r.PathValue("coreDeviceThingName"))
	if err != nil {
		return err
	}
	stored, err := s.state.Greengrass.ClientDevices(core)
	if err != nil {
		return err
	}
	list := make([]association, len(stored))
	for i, a := range stored {
		list[i] = association{ThingName: a.ThingName, Timestamp: epoch(a.At)}
	}
	p, err := paginate(r, len(list), "nextToken", "maxResults", 50, 100)
	if err != nil {
		return fail(errValidation, "%s", err.(*apiError).msg)
	}
	out := map[string]any{"associatedClientDevices": nonNilAssoc(list[p.start:p.end])}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}

func nonNilAssoc(l []association) []association {
	if l == nil {
		return []association{}
	}
	return l
}

// getConnectivityInfo answers what UpdateConnectivityInfo stored, or, for this broker's core before
// any update, the configured connectivity.endpoints.
func (s *Service) getConnectivityInfo(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("thingName")
	info, _, found, err := s.state.Greengrass.Connectivity(name)
	if err != nil {
		return err
	}
	if !found {
		info = []state.ConnectivityEntry{}
		if name == s.core.Core.ThingName {
			for _, e := range s.core.Connectivity.Endpoints {
				id := e.ID
				if id == "" {
					id = e.HostAddress
				}
				info = append(info, state.ConnectivityEntry{ID: id, HostAddress: e.HostAddress, PortNumber: e.PortNumber, Metadata: e.Metadata})
			}
		}
	}
	return ok(w, map[string]any{"ConnectivityInfo": info})
}

func (s *Service) updateConnectivityInfo(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("thingName")
	if _, err := s.coreDevice(name); err != nil {
		return err
	}
	var in struct {
		ConnectivityInfo []state.ConnectivityEntry `json:"ConnectivityInfo"`
	}
	if err := decode(r, &in); err != nil {
		return fail(errValidation, "%s", err.(*apiError).msg)
	}
	for i, c := range in.ConnectivityInfo {
		if strings.TrimSpace(c.HostAddress) == "" {
			return fail(errValidation, "ConnectivityInfo[%d].HostAddress is required", i)
		}
		if c.PortNumber < 0 || c.PortNumber > 65535 {
			return fail(errValidation, "ConnectivityInfo[%d].PortNumber %d is not 0..65535", i, c.PortNumber)
		}
		if c.ID == "" {
			in.ConnectivityInfo[i].ID = c.HostAddress
		}
	}
	version, err := s.state.Greengrass.SetConnectivity(name, in.ConnectivityInfo)
	if err != nil {
		return err
	}
	return ok(w, map[string]string{"Version": version})
}
