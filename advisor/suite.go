package advisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Suite is a suite definition: groups of test cases run in declared order, each block with its
// configuration (DA-FLOW's rootGroup).
type Suite struct {
	Name          string
	Configuration Config
	Groups        []Group
}

// Group is a group of test cases.
type Group struct {
	Name          string
	Configuration Config
	Cases         []Case
}

// Case is one test case of a suite: a name, the test ID and its configuration.
type Case struct {
	Name          string
	TestID        string
	Version       string
	Configuration Config
}

// QualificationSuite is AWS' current qualification suite (advisor.md §2), one group per category.
func QualificationSuite() Suite {
	s, _ := TestsSuite("qualification", QualificationTests)
	return s
}

// TestsSuite is a suite of the given test IDs in that order, grouped by consecutive category.
func TestsSuite(name string, ids []string) (Suite, error) {
	s := Suite{Name: name}
	for _, id := range ids {
		id = strings.TrimSpace(id)
		d, ok := lookup(id)
		if !ok {
			return Suite{}, fmt.Errorf("unknown test %q (known: %s)", id, strings.Join(IDs(), ", "))
		}
		if n := len(s.Groups); n == 0 || s.Groups[n-1].Name != d.category {
			s.Groups = append(s.Groups, Group{Name: d.category})
		}
		g := &s.Groups[len(s.Groups)-1]
		g.Cases = append(g.Cases, Case{Name: d.id, TestID: d.id, Version: "0.0.0"})
	}
	return s, nil
}

// rootGroup is Device Advisor's suite definition syntax (DA-FLOW): a configuration and groups
// ("tests"), each with a name, a configuration and test cases ("tests"), each with
// "test": {"id", "version"}.
type rootGroup struct {
	Configuration Config `json:"configuration"`
	Tests         []struct {
		Name          string `json:"name"`
		Configuration Config `json:"configuration"`
		Tests         []struct {
			Name          string `json:"name"`
			Configuration Config `json:"configuration"`
			Test          *struct {
				ID      string `json:"id"`
				Version string `json:"version"`
			} `json:"test"`
		} `json:"tests"`
	} `json:"tests"`
}

// ParseSuiteDefinition reads a suite made for Device Advisor: either a SuiteDefinitionConfiguration
// (DA-API: suiteDefinitionName and rootGroup, a JSON string or an object) or a bare rootGroup. The
// suite is validated: unknown test IDs and bad configuration values are refused with the group, the
// case and the key.
func ParseSuiteDefinition(name string, raw []byte) (Suite, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return Suite{}, fmt.Errorf("suite definition: invalid JSON: %w", err)
	}
	body := raw
	if rg, ok := top["rootGroup"]; ok {
		body = rg
		var s string
		if json.Unmarshal(rg, &s) == nil {
			body = []byte(s)
		}
		if n, ok := top["suiteDefinitionName"]; ok {
			_ = json.Unmarshal(n, &name)
		}
	}
	var rg rootGroup
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&rg); err != nil {
		return Suite{}, fmt.Errorf("suite definition: rootGroup: %w", err)
	}
	s := Suite{Name: name, Configuration: rg.Configuration}
	if len(rg.Tests) == 0 {
		return Suite{}, errors.New("suite definition: rootGroup has no group (\"tests\" is empty)")
	}
	for gi, g := range rg.Tests {
		gname := g.Name
		if gname == "" {
			gname = fmt.Sprintf("group %d", gi+1)
		}
		grp := Group{Name: gname, Configuration: g.Configuration}
		if len(g.Tests) == 0 {
			return Suite{}, fmt.Errorf("suite definition: group %q has no test case", gname)
		}
		for ci, c := range g.Tests {
			if c.Test == nil || c.Test.ID == "" {
				return Suite{}, fmt.Errorf("suite definition: group %q, case %d: no \"test\": {\"id\": ...}", gname, ci+1)
			}
			cname := c.Name
			if cname == "" {
				cname = c.Test.ID
			}
			grp.Cases = append(grp.Cases, Case{Name: cname, TestID: c.Test.ID, Version: c.Test.Version, Configuration: c.Configuration})
		}
		s.Groups = append(s.Groups, grp)
	}
	return s, s.Validate()
}

// Validate checks every case's test ID and configuration, the way Device Advisor refuses a suite
// definition before it runs.
func (s Suite) Validate() error {
	var errs []error
	n := 0
	for _, g := range s.Groups {
		for _, c := range g.Cases {
			n++
			d, ok := lookup(c.TestID)
			if !ok {
				errs = append(errs, fmt.Errorf("group %q, case %q: unknown test %q", g.Name, c.Name, c.TestID))
				continue
			}
			cfg := merge(s.Configuration, g.Configuration, c.Configuration)
			if _, _, err := cfg.Seconds("EXECUTION_TIMEOUT"); err != nil {
				errs = append(errs, fmt.Errorf("group %q, case %q: %w", g.Name, c.Name, err))
			}
			if d.check != nil {
				if err := d.check(cfg); err != nil {
					errs = append(errs, fmt.Errorf("group %q, case %q (%s): %w", g.Name, c.Name, d.id, err))
				}
			}
		}
	}
	if n == 0 {
		errs = append(errs, errors.New("the suite has no test case"))
	}
	return errors.Join(errs...)
}
