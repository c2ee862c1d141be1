package iotapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/service"
)

// Greengrass V2's client-device association and connectivity operations (botocore's greengrassv2
// model, signing name greengrass). They are kept in the service database (bucket
// iotapi-greengrass); see the README for what discovery makes of them.
const (
	greengrassBucket = "iotapi-greengrass"
	errValidation    = "ValidationException"
)

type association struct {
	ThingName string  `json:"thingName"`
	Timestamp float64 `json:"associationTimestamp"`
}

type connectivityInfo struct {
	ID          string `json:"Id"`
	HostAddress string `json:"HostAddress"`
	PortNumber  int    `json:"PortNumber"`
	Metadata    string `json:"Metadata"`
}

type storedConnectivity struct {
	Info    []connectivityInfo `json:"info"`
	Version string             `json:"version"`
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

func (s *Service) greengrassStore() (service.Store, error) { return s.host.Store(greengrassBucket) }

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
		st, err := s.greengrassStore()
		if err != nil {
			return err
		}
		errorEntries := []map[string]string{}
		now := epoch(time.Now())
		err = st.Update(func(tx service.Tx) error {
			for _, e := range in.Entries {
				_, found, err := s.state.Registry.Thing(e.ThingName)
				if err != nil {
					return err
				}
				if !found {
					errorEntries = append(errorEntries, map[string]string{"thingName": e.ThingName, "code": "ResourceNotFoundException", "message": "thing " + e.ThingName + " does not exist"})
					continue
				}
				key := "assoc/" + core + "/" + e.ThingName
				if !add {
					if err := tx.Delete(key); err != nil {
						return err
					}
					continue
				}
				if old, err := tx.Get(key); err != nil || old != nil {
					if err != nil {
						return err
					}
					continue // associated already: its timestamp stays
				}
				raw, _ := json.Marshal(association{ThingName: e.ThingName, Timestamp: now})
				if err := tx.Put(key, raw); err != nil {
					return err
				}
			}
			return nil
		})
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
	st, err := s.greengrassStore()
	if err != nil {
		return err
	}
	var list []association
	err = st.ForEach("assoc/"+core+"/", func(_ string, v []byte) error {
		var a association
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		list = append(list, a)
		return nil
	})
	if err != nil {
		return err
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
	st, err := s.greengrassStore()
	if err != nil {
		return err
	}
	raw, err := st.Get("conn/" + name)
	if err != nil {
		return err
	}
	info := []connectivityInfo{}
	if raw != nil {
		var sc storedConnectivity
		if err := json.Unmarshal(raw, &sc); err != nil {
			return err
		}
		info = sc.Info
	} else if name == s.core.Core.ThingName {
		for _, e := range s.core.Connectivity.Endpoints {
			id := e.ID
			if id == "" {
				id = e.HostAddress
			}
			info = append(info, connectivityInfo{ID: id, HostAddress: e.HostAddress, PortNumber: e.PortNumber, Metadata: e.Metadata})
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
		ConnectivityInfo []connectivityInfo `json:"ConnectivityInfo"`
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
	st, err := s.greengrassStore()
	if err != nil {
		return err
	}
	version := strconv.FormatInt(time.Now().UnixNano(), 36)
	raw, _ := json.Marshal(storedConnectivity{Info: in.ConnectivityInfo, Version: version})
	if err := st.Put("conn/"+name, raw); err != nil {
		return err
	}
	return ok(w, map[string]string{"Version": version})
}
