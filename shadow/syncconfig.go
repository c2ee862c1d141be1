package shadow

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ggbroker/ggbroker/config"
)

// SyncConfig is the shadow block's synchronize key: which local shadows the shadow service keeps in
// step with the upstream's Device Shadow service, and which way. The keys are the Greengrass shadow
// manager's, verbatim (greengrass-v2/shadow-manager-component.md, services/shadow.md §9), so that a
// pasted configuration works.
type SyncConfig struct {
	// CoreThing syncs shadows of the core device's own thing (core.thingName).
	CoreThing *SyncShadows `mapstructure:"coreThing"`
	// ShadowDocuments and ShadowDocumentsMap name other things' shadows (the two spellings Greengrass
	// accepts; both may be given).
	ShadowDocuments    []SyncDocument         `mapstructure:"shadowDocuments"`
	ShadowDocumentsMap map[string]SyncShadows `mapstructure:"shadowDocumentsMap"`
	// Direction is betweenDeviceAndCloud (the default), deviceToCloud or cloudToDevice, in any case.
	Direction string `mapstructure:"direction"`
}

// SyncShadows is one thing's synced shadows: its classic shadow (true when not said) and named ones.
type SyncShadows struct {
	Classic      *bool    `mapstructure:"classic"`
	NamedShadows []string `mapstructure:"namedShadows"`
}

// SyncDocument is one entry of shadowDocuments.
type SyncDocument struct {
	ThingName    string   `mapstructure:"thingName"`
	Classic      *bool    `mapstructure:"classic"`
	NamedShadows []string `mapstructure:"namedShadows"`
}

// SyncStrategy is the shadow manager's strategy key: realTime (the default) syncs each change as it
// happens, periodic only every delay seconds.
type SyncStrategy struct {
	Type  string `mapstructure:"type"`
	Delay int    `mapstructure:"delay"`
}

// SyncRateLimits is the shadow manager's rateLimits key. Only the outbound limit concerns the sync;
// the two local ones are accepted for a pasted configuration's sake (the local limit here is
// maxInFlightRequests).
type SyncRateLimits struct {
	MaxOutboundSyncUpdatesPerSecond   int `mapstructure:"maxOutboundSyncUpdatesPerSecond"`
	MaxTotalLocalRequestsRate         int `mapstructure:"maxTotalLocalRequestsRate"`
	MaxLocalRequestsPerSecondPerThing int `mapstructure:"maxLocalRequestsPerSecondPerThing"`
}

// Direction is which way the sync goes.
type Direction string

// The directions, as Greengrass names them (SM sync/model/Direction.java).
const (
	BetweenDeviceAndCloud Direction = "betweenDeviceAndCloud"
	DeviceToCloud         Direction = "deviceToCloud"
	CloudToDevice         Direction = "cloudToDevice"
)

func (d Direction) toCloud() bool  { return d != CloudToDevice }
func (d Direction) toDevice() bool { return d != DeviceToCloud }

// reservedShadow is the named shadow Greengrass keeps for its own deployments (GG-SM): never synced.
const reservedShadow = "AWSManagedGreengrassV2Deployment"

// syncSettings is the checked sync configuration: nil shadows means sync is off.
type syncSettings struct {
	shadows   []ID
	direction Direction
	periodic  time.Duration // 0: realTime
	interval  time.Duration // between requests to the upstream, 0: unpaced
	warnings  []string
}

// checkSync validates the sync keys. coreThing is core.thingName; mapNames maps the lower-cased
// thing names of shadowDocumentsMap to their spelling in the file (viper lower-cases map keys, but
// thing names are case-sensitive).
func (c *Config) checkSync(coreThing string, mapNames map[string]string) (*syncSettings, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("shadow.synchronize.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	s := &syncSettings{}
	sc := c.Synchronize
	switch strings.ToLower(sc.Direction) {
	case "", strings.ToLower(string(BetweenDeviceAndCloud)):
		s.direction = BetweenDeviceAndCloud
	case strings.ToLower(string(DeviceToCloud)):
		s.direction = DeviceToCloud
	case strings.ToLower(string(CloudToDevice)):
		s.direction = CloudToDevice
	default:
		bad("direction", "%q is not betweenDeviceAndCloud, deviceToCloud or cloudToDevice", sc.Direction)
	}
	seen := map[ID]bool{}
	add := func(key, thing string, classic *bool, named []string) {
		if !validName(thing, maxThingNameLen) {
			bad(key, "%q is not a thing name (1-128 characters of a-z A-Z 0-9 : _ -)", thing)
			return
		}
		ids := []ID{}
		if classic == nil || *classic {
			ids = append(ids, ID{Thing: thing})
		}
		for _, n := range named {
			switch {
			case n == reservedShadow:
				s.warnings = append(s.warnings, fmt.Sprintf("shadow.synchronize.%s: %s is Greengrass' reserved shadow; not synced", key, n))
				continue
			case !validName(n, maxShadowNameLen):
				bad(key+".namedShadows", "%q is not a shadow name (1-64 characters of a-z A-Z 0-9 : _ -)", n)
				continue
			}
			ids = append(ids, ID{Thing: thing, Name: n})
		}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				s.shadows = append(s.shadows, id)
			}
		}
	}
	if sc.CoreThing != nil {
		if coreThing == "" {
			bad("coreThing", "core.thingName is empty: the core device's thing is unknown")
		} else {
			add("coreThing", coreThing, sc.CoreThing.Classic, sc.CoreThing.NamedShadows)
		}
	}
	for i, d := range sc.ShadowDocuments {
		add(fmt.Sprintf("shadowDocuments[%d].thingName", i), d.ThingName, d.Classic, d.NamedShadows)
	}
	things := make([]string, 0, len(sc.ShadowDocumentsMap))
	for k := range sc.ShadowDocumentsMap {
		things = append(things, k)
	}
	sort.Strings(things)
	for _, k := range things {
		name := k
		if n, ok := mapNames[strings.ToLower(k)]; ok {
			name = n
		}
		v := sc.ShadowDocumentsMap[k]
		add("shadowDocumentsMap."+name, name, v.Classic, v.NamedShadows)
	}
	switch strings.ToLower(c.Strategy.Type) {
	case "", "realtime":
	case "periodic":
		if c.Strategy.Delay < 1 {
			errs = append(errs, fmt.Errorf("shadow.strategy.delay: %d: a periodic strategy needs a delay of at least 1 second", c.Strategy.Delay))
		}
		s.periodic = time.Duration(c.Strategy.Delay) * time.Second
	default:
		errs = append(errs, fmt.Errorf("shadow.strategy.type: %q is not realTime or periodic", c.Strategy.Type))
	}
	switch n := c.RateLimits.MaxOutboundSyncUpdatesPerSecond; {
	case n < 0:
		errs = append(errs, fmt.Errorf("shadow.rateLimits.maxOutboundSyncUpdatesPerSecond: %d is negative", n))
	case n > 0:
		s.interval = time.Second / time.Duration(n)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(s.shadows) == 0 {
		s.shadows = nil
	}
	return s, nil
}

// documentsMapNames reads the thing names of shadow.synchronize.shadowDocumentsMap from the config
// file with their case, keyed by the lower-cased name. source is config.Config.Source: a path, or
// "embedded defaults" (no file, no names).
func documentsMapNames(source string) (map[string]string, error) {
	raw, err := os.ReadFile(source)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("config file %s: %w", source, err)
	}
	var doc struct {
		Shadow struct {
			Synchronize struct {
				Map map[string]any `yaml:"shadowDocumentsMap"`
			} `yaml:"synchronize"`
		} `yaml:"shadow"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", source, err)
	}
	names := map[string]string{}
	for n := range doc.Shadow.Synchronize.Map {
		low := strings.ToLower(n)
		if prev, dup := names[low]; dup {
			return nil, fmt.Errorf("config file %s: shadow.synchronize.shadowDocumentsMap: %q and %q differ only in case; the keys are read case-insensitively", source, prev, n)
		}
		names[low] = n
	}
	return names, nil
}

// loadSync reads and checks the sync keys of the shadow block.
func loadSync(c *config.Config, cfg Config) (*syncSettings, error) {
	names, err := documentsMapNames(c.Source)
	if err != nil {
		return nil, err
	}
	s, err := cfg.checkSync(c.Core.ThingName, names)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Source, err)
	}
	return s, nil
}
