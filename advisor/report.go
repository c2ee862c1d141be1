package advisor

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is a test case's (or a suite run's) status, with Device Advisor's names (DA-API).
type Status string

// Statuses a finished test case can have, and the ones a run passes through.
const (
	StatusPass             Status = "PASS"
	StatusPassWithWarnings Status = "PASS_WITH_WARNINGS"
	StatusFail             Status = "FAIL"
	StatusError            Status = "ERROR"
	StatusCanceled         Status = "CANCELED"
	StatusRunning          Status = "RUNNING"
	StatusPending          Status = "PENDING"
)

// Result is one test case run, shaped like Device Advisor's TestCaseRun (DA-API).
type Result struct {
	Group     string    `json:"-"` // the JSON has the cases under their group
	Name      string    `json:"testCaseDefinitionName"`
	TestID    string    `json:"testCaseDefinitionId"`
	Status    Status    `json:"status"`
	StartTime time.Time `json:"startTime"`
	EndTime   time.Time `json:"endTime"`
	// Failure is the reason of a FAIL or ERROR; Warnings that of a PASS_WITH_WARNINGS.
	Failure  string `json:"failure,omitempty"`
	Warnings string `json:"warnings,omitempty"`
	// Details are what the endpoint observed (handshake errors, delays measured), for a person.
	Details []string `json:"details,omitempty"`
}

// Elapsed is how long the case ran.
func (r *Result) Elapsed() time.Duration { return r.EndTime.Sub(r.StartTime) }

// Reason is the one line that explains a non-PASS status.
func (r *Result) Reason() string {
	if r.Failure != "" {
		return r.Failure
	}
	return r.Warnings
}

// Report is a suite run.
type Report struct {
	Suite     string    `json:"suiteDefinitionName"`
	Thing     string    `json:"thingName"`
	Endpoint  string    `json:"endpoint"`
	Status    Status    `json:"status"`
	StartTime time.Time `json:"startTime"`
	EndTime   time.Time `json:"endTime"`
	Results   []Result  `json:"tests"`
	// Refused counts the connections the endpoint refused between cases (the grace windows).
	Refused int `json:"refusedConnections"`
}

// Passed reports whether nothing FAILed or ERRORed and the run was not stopped: the command's exit
// status.
func (rep *Report) Passed() bool {
	for _, r := range rep.Results {
		if r.Status == StatusFail || r.Status == StatusError || r.Status == StatusCanceled {
			return false
		}
	}
	return true
}

// finish sets the suite status: FAIL if any case failed or errored (acceptance case 23), else
// PASS_WITH_WARNINGS if any warned, else PASS; CANCELED if the run was stopped with cases not run.
func (rep *Report) finish(canceled bool) {
	rep.Status = StatusPass
	for _, r := range rep.Results {
		switch r.Status {
		case StatusFail, StatusError:
			rep.Status = StatusFail
		case StatusPassWithWarnings:
			if rep.Status == StatusPass {
				rep.Status = StatusPassWithWarnings
			}
		}
	}
	if canceled && rep.Status != StatusFail {
		rep.Status = StatusCanceled
	}
}

// suiteRunJSON is the report's JSON form, after Device Advisor's GetSuiteRun response (DA-API): the
// cases under testResult.groups[].tests[].
type suiteRunJSON struct {
	Suite      string    `json:"suiteDefinitionName"`
	Thing      string    `json:"thingName"`
	Endpoint   string    `json:"endpoint"`
	Status     Status    `json:"status"`
	StartTime  time.Time `json:"startTime"`
	EndTime    time.Time `json:"endTime"`
	Refused    int       `json:"refusedConnections"`
	TestResult struct {
		Groups []groupJSON `json:"groups"`
	} `json:"testResult"`
}

type groupJSON struct {
	GroupName string   `json:"groupName"`
	Tests     []Result `json:"tests"`
}

// MarshalJSON writes the GetSuiteRun shape.
func (rep *Report) MarshalJSON() ([]byte, error) {
	out := suiteRunJSON{Suite: rep.Suite, Thing: rep.Thing, Endpoint: rep.Endpoint, Status: rep.Status, StartTime: rep.StartTime, EndTime: rep.EndTime, Refused: rep.Refused}
	out.TestResult.Groups = []groupJSON{}
	for _, r := range rep.Results {
		if n := len(out.TestResult.Groups); n == 0 || out.TestResult.Groups[n-1].GroupName != r.Group {
			out.TestResult.Groups = append(out.TestResult.Groups, groupJSON{GroupName: r.Group})
		}
		g := &out.TestResult.Groups[len(out.TestResult.Groups)-1]
		g.Tests = append(g.Tests, r)
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (rep *Report) UnmarshalJSON(b []byte) error {
	var in suiteRunJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*rep = Report{Suite: in.Suite, Thing: in.Thing, Endpoint: in.Endpoint, Status: in.Status, StartTime: in.StartTime, EndTime: in.EndTime, Refused: in.Refused}
	for _, g := range in.TestResult.Groups {
		for _, r := range g.Tests {
			r.Group = g.GroupName
			rep.Results = append(rep.Results, r)
		}
	}
	return nil
}

// WriteJSON writes the report as JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes the final table: one row per case with its status and elapsed time, and the
// reason of every non-PASS.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST\tSTATUS\tTIME\tREASON")
	for _, r := range rep.Results {
		reason := ""
		if r.Status != StatusPass {
			reason = r.Reason()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Status, formatSeconds(r.Elapsed().Round(time.Millisecond)), reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[Status]int{}
	for _, r := range rep.Results {
		counts[r.Status]++
	}
	_, err := fmt.Fprintf(w, "suite %s: %s (%d passed, %d with warnings, %d failed, %d errors, %d canceled) in %s\n",
		rep.Suite, rep.Status, counts[StatusPass], counts[StatusPassWithWarnings], counts[StatusFail], counts[StatusError], counts[StatusCanceled],
		formatSeconds(rep.EndTime.Sub(rep.StartTime).Round(time.Millisecond)))
	return err
}

// JUnit XML in the form AWS IoT Device Tester writes (IDT-RPT): <testsuites> with the totals, one
// <testsuite> per group, one <testcase> per case. The status mapping is advisor.md §4's:
// PASS → plain testcase; PASS_WITH_WARNINGS → testcase with the warnings in <system-out>; FAIL →
// <failure>; ERROR → <error>; CANCELED → <skipped>.
type (
	JUnitSuites struct {
		XMLName  xml.Name     `xml:"testsuites"`
		Name     string       `xml:"name,attr"`
		Time     string       `xml:"time,attr"`
		Tests    int          `xml:"tests,attr"`
		Failures int          `xml:"failures,attr"`
		Skipped  int          `xml:"skipped,attr"`
		Errors   int          `xml:"errors,attr"`
		Disabled int          `xml:"disabled,attr"`
		Suites   []JUnitSuite `xml:"testsuite"`
	}
	JUnitSuite struct {
		Name     string      `xml:"name,attr"`
		Package  string      `xml:"package,attr"`
		Tests    int         `xml:"tests,attr"`
		Failures int         `xml:"failures,attr"`
		Time     string      `xml:"time,attr"`
		Disabled int         `xml:"disabled,attr"`
		Errors   int         `xml:"errors,attr"`
		Skipped  int         `xml:"skipped,attr"`
		Cases    []JUnitCase `xml:"testcase"`
	}
	JUnitCase struct {
		ClassName string        `xml:"classname,attr"`
		Name      string        `xml:"name,attr"`
		Time      string        `xml:"time,attr"`
		Failure   *JUnitMessage `xml:"failure"`
		Error     *JUnitMessage `xml:"error"`
		Skipped   *JUnitMessage `xml:"skipped"`
		SystemOut string        `xml:"system-out,omitempty"`
	}
	JUnitMessage struct {
		Type    string `xml:"type,attr,omitempty"`
		Message string `xml:",chardata"`
	}
)

// JUnit builds the JUnit document of the report.
func (rep *Report) JUnit() *JUnitSuites {
	doc := &JUnitSuites{Name: rep.Suite + " results", Time: junitTime(rep.EndTime.Sub(rep.StartTime))}
	index := map[string]int{}
	for _, r := range rep.Results {
		i, ok := index[r.Group]
		if !ok {
			i = len(doc.Suites)
			index[r.Group] = i
			doc.Suites = append(doc.Suites, JUnitSuite{Name: r.Group})
		}
		s := &doc.Suites[i]
		c := JUnitCase{ClassName: r.Group, Name: r.Name, Time: junitTime(r.Elapsed())}
		detail := strings.Join(r.Details, "\n")
		switch r.Status {
		case StatusPassWithWarnings:
			c.SystemOut = strings.TrimSpace(r.Warnings + "\n" + detail)
		case StatusFail:
			c.Failure = &JUnitMessage{Type: r.TestID + " failed", Message: r.Failure}
			c.SystemOut = detail
			s.Failures++
		case StatusError:
			c.Error = &JUnitMessage{Type: r.TestID + " error", Message: r.Failure}
			c.SystemOut = detail
			s.Errors++
		case StatusCanceled:
			c.Skipped = &JUnitMessage{Message: r.Failure}
			s.Skipped++
		}
		s.Tests++
		s.Cases = append(s.Cases, c)
	}
	for i := range doc.Suites {
		s := &doc.Suites[i]
		var total time.Duration
		for _, r := range rep.Results {
			if r.Group == s.Name {
				total += r.Elapsed()
			}
		}
		s.Time = junitTime(total)
		doc.Tests += s.Tests
		doc.Failures += s.Failures
		doc.Errors += s.Errors
		doc.Skipped += s.Skipped
	}
	return doc
}

// WriteJUnit writes the JUnit XML document.
func (rep *Report) WriteJUnit(w io.Writer) error {
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(rep.JUnit()); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func junitTime(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
