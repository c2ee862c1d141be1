// Package audit is an offline Device Defender audit: it runs AWS IoT Device Defender's audit checks,
// with their names and severities, over ggbroker's registry, policy documents, CAs and the broker's
// connection records, and says for every finding which resource it is about and how to fix it.
package audit

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/policy"
)

// Severity is a check's severity, with Device Defender's names.
type Severity string

// Severities, from the most severe.
const (
	Critical Severity = "CRITICAL"
	High     Severity = "HIGH"
	Medium   Severity = "MEDIUM"
	Low      Severity = "LOW"
)

// Rank orders severities: Critical is 4, Low 1, anything else 0.
func (s Severity) Rank() int {
	switch s {
	case Critical:
		return 4
	case High:
		return 3
	case Medium:
		return 2
	case Low:
		return 1
	}
	return 0
}

// ParseSeverity reads a severity name, case-insensitively.
func ParseSeverity(s string) (Severity, error) {
	v := Severity(strings.ToUpper(strings.TrimSpace(s)))
	if v.Rank() == 0 {
		return "", fmt.Errorf("severity %q: use critical, high, medium or low", s)
	}
	return v, nil
}

// Check names (Device Defender's, as they appear in its CLI and API) and their severities
// (iot-device-defender devguide, audit-chk-*.md).
const (
	CheckPolicyOverlyPermissive    = "IOT_POLICY_OVERLY_PERMISSIVE_CHECK"
	CheckPolicyMisconfiguration    = "IOT_POLICY_POTENTIAL_MIS_CONFIGURATION_CHECK"
	CheckDeviceCertificateShared   = "DEVICE_CERTIFICATE_SHARED_CHECK"
	CheckConflictingClientIDs      = "CONFLICTING_CLIENT_IDS_CHECK"
	CheckDeviceCertificateExpiring = "DEVICE_CERTIFICATE_EXPIRING_CHECK"
	CheckCACertificateExpiring     = "CA_CERTIFICATE_EXPIRING_CHECK"
	CheckRevokedStillActive        = "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK"
	CheckDeviceKeyQuality          = "DEVICE_CERTIFICATE_KEY_QUALITY_CHECK"
	CheckCAKeyQuality              = "CA_CERTIFICATE_KEY_QUALITY_CHECK"
)

// Checks lists the checks in the order they run, with their severities.
var Checks = []struct {
	Name     string
	Severity Severity
}{
	{CheckPolicyOverlyPermissive, Critical},
	{CheckPolicyMisconfiguration, Medium},
	{CheckDeviceCertificateShared, Critical},
	{CheckConflictingClientIDs, High},
	{CheckDeviceCertificateExpiring, Medium},
	{CheckCACertificateExpiring, Medium},
	{CheckRevokedStillActive, Medium},
	{CheckDeviceKeyQuality, Critical},
	{CheckCAKeyQuality, Critical},
}

// Resource types, Device Defender's ResourceType names.
const (
	ResourceDeviceCertificate = "DEVICE_CERTIFICATE"
	ResourceCACertificate     = "CA_CERTIFICATE"
	ResourcePolicy            = "IOT_POLICY"
	ResourceClientID          = "CLIENT_ID"
)

// Resource names a non-compliant resource.
type Resource struct {
	Type string `json:"resourceType"`
	ID   string `json:"resourceIdentifier"`
}

func (r Resource) String() string {
	return strings.ToLower(strings.ReplaceAll(r.Type, "_", " ")) + " " + r.ID
}

// Finding is one non-compliant resource, shaped like Device Defender's AuditFinding.
type Finding struct {
	Check      string     `json:"checkName"`
	Severity   Severity   `json:"severity"`
	Resource   Resource   `json:"nonCompliantResource"`
	Related    []Resource `json:"relatedResources,omitempty"`
	ReasonCode string     `json:"reasonForNonComplianceCode,omitempty"`
	Reason     string     `json:"reasonForNonCompliance"`
	Fix        string     `json:"fix"`
}

// CheckResult is one check's summary, like Device Defender's AuditCheckDetails.
type CheckResult struct {
	Name         string   `json:"checkName"`
	Severity     Severity `json:"severity"`
	Status       string   `json:"checkRunStatus"` // COMPLETED_COMPLIANT, COMPLETED_NON_COMPLIANT, NOT_RUN
	Compliant    bool     `json:"checkCompliant"`
	Total        int      `json:"totalResourcesCount"`
	NonCompliant int      `json:"nonCompliantResourcesCount"`
	Note         string   `json:"message,omitempty"`
}

// CA is a CA certificate the broker uses or trusts.
type CA struct {
	Name string // "core device CA", "device CA", or the trusted CA's file
	Cert *x509.Certificate
}

// PolicyDoc is one policy document file.
type PolicyDoc struct {
	Name string
	Raw  []byte
}

// Input is what an audit reads.
type Input struct {
	Registry *auth.Data
	Policies []PolicyDoc
	CAs      []CA
	// Records are the broker's connection records; nil when none were given (the record-based
	// checks then do not run).
	Records []Record
	// Env is the partition, region and account the policies are evaluated in.
	Env policy.Env
	Now time.Time
	// ExpiringWithin is the window of the expiring checks (Device Defender: 30 days).
	ExpiringWithin time.Duration
	// Since is how far back records are read (Device Defender's on-demand audit: 31 days).
	Since time.Duration
}

// Report is an audit's result.
type Report struct {
	Time     time.Time     `json:"auditTime"`
	Checks   []CheckResult `json:"checks"`
	Findings []Finding     `json:"findings"`
}

// Worst is the highest severity of the findings, "" when there are none.
func (r *Report) Worst() Severity {
	var w Severity
	for _, f := range r.Findings {
		if f.Severity.Rank() > w.Rank() {
			w = f.Severity
		}
	}
	return w
}

// FailsAt reports whether a finding is at or above sev.
func (r *Report) FailsAt(sev Severity) bool { return r.Worst().Rank() >= sev.Rank() && r.Worst() != "" }

// Run runs every check.
func Run(in Input) (*Report, error) {
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	if in.ExpiringWithin == 0 {
		in.ExpiringWithin = 30 * 24 * time.Hour
	}
	if in.Since == 0 {
		in.Since = 31 * 24 * time.Hour
	}
	if in.Registry == nil {
		in.Registry = &auth.Data{}
	}
	a, err := newAuditor(in)
	if err != nil {
		return nil, err
	}
	rep := &Report{Time: in.Now.UTC()}
	for _, c := range Checks {
		res := CheckResult{Name: c.Name, Severity: c.Severity}
		findings, total, note, ran := a.run(c.Name)
		for i := range findings {
			findings[i].Check, findings[i].Severity = c.Name, c.Severity
		}
		res.Total, res.NonCompliant, res.Note = total, countResources(findings), note
		switch {
		case !ran:
			res.Status = "NOT_RUN"
		case len(findings) == 0:
			res.Status, res.Compliant = "COMPLETED_COMPLIANT", true
		default:
			res.Status = "COMPLETED_NON_COMPLIANT"
		}
		rep.Checks = append(rep.Checks, res)
		rep.Findings = append(rep.Findings, findings...)
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Severity.Rank() > rep.Findings[j].Severity.Rank() })
	return rep, nil
}

func countResources(fs []Finding) int {
	seen := map[Resource]bool{}
	for _, f := range fs {
		seen[f.Resource] = true
	}
	return len(seen)
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the findings, most severe first, each with its resource, reason and fix, then
// one line per check.
func (r *Report) WriteText(w io.Writer) error {
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%-8s  %s  %s\n", f.Severity, f.Check, f.Resource)
		reason := f.Reason
		if f.ReasonCode != "" {
			reason = f.ReasonCode + ": " + reason
		}
		fmt.Fprintf(w, "          why: %s\n          fix: %s\n\n", reason, f.Fix)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSEVERITY\tSTATUS\tRESOURCES\tNON-COMPLIANT")
	for _, c := range r.Checks {
		status := c.Status
		if c.Note != "" {
			status += " (" + c.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", c.Name, c.Severity, status, c.Total, c.NonCompliant)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d findings\n", len(r.Findings))
	return err
}
