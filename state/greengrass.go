package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// greengrassFile holds what the Greengrass V2 API manages for core devices.
const greengrassFile = "greengrass.json"

// Greengrass is what AWS keeps in the cloud for Greengrass core devices and ggbroker keeps in the
// state directory (greengrass.json): the client devices associated with each core
// (BatchAssociateClientDeviceWithCoreDevice) and each core's connectivity information
// (UpdateConnectivityInfo). The iotapi service writes it; discovery reads it, so that what a test rig
// sets through the API is what a device discovers, as with AWS' cloud discovery
// (greengrass-v2/greengrass-discover-api.md). Its methods are safe for concurrent use; every write
// replaces the file atomically.
type Greengrass struct {
	path string

	mu       sync.Mutex // serialises read-modify-write of the file and guards watchers
	watchers map[int]func(core string)
	nextID   int
}

// Association is one client device associated with a core device.
type Association struct {
	ThingName string
	// At is when it was associated (ListClientDevicesAssociatedWithCoreDevice's associationTimestamp).
	At time.Time
}

// ConnectivityEntry is one entry of a core device's connectivity information, as
// UpdateConnectivityInfo takes it and discovery answers it.
type ConnectivityEntry struct {
	ID          string `json:"Id"`
	HostAddress string `json:"HostAddress"`
	PortNumber  int    `json:"PortNumber"`
	Metadata    string `json:"Metadata"`
}

type greengrassData struct {
	Cores map[string]*coreDeviceData `json:"cores"`
}

type coreDeviceData struct {
	// ClientDevices maps a thing name to its association time (Unix seconds, fractional).
	ClientDevices map[string]float64 `json:"clientDevices,omitempty"`
	// Connectivity is nil until UpdateConnectivityInfo set it.
	Connectivity *storedConnectivity `json:"connectivity,omitempty"`
}

type storedConnectivity struct {
	Info    []ConnectivityEntry `json:"info"`
	Version string              `json:"version"`
}

func openGreengrass(path string) *Greengrass {
	return &Greengrass{path: path, watchers: map[int]func(string){}}
}

// load reads the file; a missing file is an empty store. Called with g.mu held.
func (g *Greengrass) load() (*greengrassData, error) {
	d := &greengrassData{Cores: map[string]*coreDeviceData{}}
	raw, err := os.ReadFile(g.path)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("greengrass state: %w", err)
	}
	if err := json.Unmarshal(raw, d); err != nil {
		return nil, fmt.Errorf("greengrass state %s: %w", g.path, err)
	}
	if d.Cores == nil {
		d.Cores = map[string]*coreDeviceData{}
	}
	return d, nil
}

// update applies fn to the stored data and writes it back, under the lock.
func (g *Greengrass) update(fn func(d *greengrassData) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	d, err := g.load()
	if err != nil {
		return err
	}
	if err := fn(d); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("greengrass state: %w", err)
	}
	if err := certs.WriteFileAtomic(g.path, raw, 0o600); err != nil {
		return fmt.Errorf("greengrass state: %w", err)
	}
	return nil
}

func (d *greengrassData) core(name string) *coreDeviceData {
	c, ok := d.Cores[name]
	if !ok {
		c = &coreDeviceData{}
		d.Cores[name] = c
	}
	return c
}

// Associate associates the things with core at the time given; a thing associated already keeps its
// first association time, as AWS does.
func (g *Greengrass) Associate(core string, things []string, at time.Time) error {
	ts := float64(at.UnixMilli()) / 1000
	return g.update(func(d *greengrassData) error {
		c := d.core(core)
		if c.ClientDevices == nil {
			c.ClientDevices = map[string]float64{}
		}
		for _, t := range things {
			if _, ok := c.ClientDevices[t]; !ok {
				c.ClientDevices[t] = ts
			}
		}
		return nil
	})
}

// Disassociate removes the things' association with core; a thing not associated is no error.
func (g *Greengrass) Disassociate(core string, things []string) error {
	return g.update(func(d *greengrassData) error {
		if c, ok := d.Cores[core]; ok {
			for _, t := range things {
				delete(c.ClientDevices, t)
			}
		}
		return nil
	})
}

// ClientDevices lists the things associated with core, by name.
func (g *Greengrass) ClientDevices(core string) ([]Association, error) {
	g.mu.Lock()
	d, err := g.load()
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c, ok := d.Cores[core]
	if !ok {
		return nil, nil
	}
	out := make([]Association, 0, len(c.ClientDevices))
	for name, ts := range c.ClientDevices {
		out = append(out, Association{ThingName: name, At: time.UnixMilli(int64(ts * 1000))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ThingName < out[j].ThingName })
	return out, nil
}

// Associated reports whether thing is associated with core through the API.
func (g *Greengrass) Associated(core, thing string) (bool, error) {
	list, err := g.ClientDevices(core)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(list, func(a Association) bool { return a.ThingName == thing }), nil
}

// Connectivity is the connectivity information UpdateConnectivityInfo stored for core; ok is false
// when none was stored (the config's connectivity applies then).
func (g *Greengrass) Connectivity(core string) (info []ConnectivityEntry, version string, ok bool, err error) {
	g.mu.Lock()
	d, err := g.load()
	g.mu.Unlock()
	if err != nil {
		return nil, "", false, err
	}
	c, found := d.Cores[core]
	if !found || c.Connectivity == nil {
		return nil, "", false, nil
	}
	return slices.Clone(c.Connectivity.Info), c.Connectivity.Version, true, nil
}

// SetConnectivity stores core's connectivity information (UpdateConnectivityInfo replaces the whole
// list) and returns its new version; the OnConnectivityChange functions are called once it is stored.
func (g *Greengrass) SetConnectivity(core string, info []ConnectivityEntry) (string, error) {
	version := strconv.FormatInt(time.Now().UnixNano(), 36)
	err := g.update(func(d *greengrassData) error {
		d.core(core).Connectivity = &storedConnectivity{Info: slices.Clone(info), Version: version}
		return nil
	})
	if err != nil {
		return "", err
	}
	g.mu.Lock()
	fns := make([]func(string), 0, len(g.watchers))
	for _, fn := range g.watchers {
		fns = append(fns, fn)
	}
	g.mu.Unlock()
	for _, fn := range fns {
		fn(core)
	}
	return version, nil
}

// OnConnectivityChange calls fn with the core's name after each SetConnectivity, in the caller's
// goroutine, so that the broker re-issues its server certificates for new host addresses at once.
// The returned function stops the calls.
func (g *Greengrass) OnConnectivityChange(fn func(core string)) (stop func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.nextID
	g.nextID++
	g.watchers[id] = fn
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.watchers, id)
	}
}
