package advisor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

// shadowSetupToken is the clientToken of Device Advisor's own shadow updates: "its updates carry
// clientToken = DeviceAdvisorShadowTestCaseSetup" (DA-SH, advisor.md §3), so a device can tell them
// from its own.
const shadowSetupToken = "DeviceAdvisorShadowTestCaseSetup"

// shadowPrefix is the topic prefix of the case's shadow: the classic one, or SHADOW_NAME's.
func shadowPrefix(tc *TestContext) string {
	p := "$aws/things/" + tc.Thing + "/shadow"
	if n, ok, _ := tc.Config.String("SHADOW_NAME"); ok && n != "" {
		p += "/name/" + n
	}
	return p
}

// shadowPublishCase is Shadow_Publish_Reported_State: after it connects, the device publishes its
// reported state to the shadow (SHADOW_NAME's when set), equal to REPORTED_STATE when that is set;
// PASS once the shadow service accepts such an update (acceptance case 19).
type shadowPublishCase struct {
	prefix  string
	want    map[string]any
	pending bool   // a device update that qualifies awaits the service's answer
	last    string // why the device's last shadow message did not qualify
}

func newShadowPublishCase(tc *TestContext) *shadowPublishCase {
	want, _, _ := tc.Config.Object("REPORTED_STATE")
	return &shadowPublishCase{prefix: shadowPrefix(tc), want: want}
}

func (c *shadowPublishCase) onConnect(*driver) *verdict             { return nil }
func (c *shadowPublishCase) onSubscribe(*driver, []string) *verdict { return nil }
func (c *shadowPublishCase) onSettle(*driver) *verdict              { return nil }

func (c *shadowPublishCase) onDevicePublish(d *driver, topic string, payload []byte) *verdict {
	if topic != c.prefix+"/update" {
		if strings.HasPrefix(topic, "$aws/things/") && strings.HasSuffix(topic, "/update") && strings.Contains(topic, "/shadow") {
			c.last = "the device published to " + topic + ", not " + c.prefix + "/update"
			d.tc.Notef("%s", c.last)
		}
		return nil
	}
	reported, ok := reportedOf(payload)
	switch {
	case !ok:
		c.last = "the device's update on " + topic + " has no state.reported"
	case c.want != nil && !reflect.DeepEqual(reported, c.want):
		c.last = fmt.Sprintf("the device reported %s, REPORTED_STATE is %s", compactJSON(reported), compactJSON(c.want))
	default:
		c.pending = true
		return nil
	}
	d.tc.Notef("%s", c.last)
	return nil
}

func (c *shadowPublishCase) onServiceMessage(d *driver, m sentMessage) *verdict {
	if !c.pending {
		return nil
	}
	switch m.Topic {
	case c.prefix + "/update/accepted":
		v := pass()
		return &v
	case c.prefix + "/update/rejected":
		v := fail("the shadow service rejected the device's update: %s", m.Payload)
		return &v
	}
	return nil
}

func (c *shadowPublishCase) waitingFor() string {
	s := "waiting for the device to publish its reported state on " + c.prefix + "/update"
	if c.want != nil {
		s += " equal to REPORTED_STATE " + compactJSON(c.want)
	}
	if c.last != "" {
		s += " (" + c.last + ")"
	}
	return s
}

// shadowUpdateCase is Shadow_Update_Reported_State: the advisor sets DESIRED_STATE in the shadow
// (clientToken DeviceAdvisorShadowTestCaseSetup) once the device has subscribed to the shadow's
// delta or documents, or Options.Settle after it connected; the device must read the delta and
// report the desired state back. PASS once the shadow's reported state holds DESIRED_STATE, as
// the service's update/documents says; a shadow whose reported state already equals it is an
// ERROR, as Device Advisor requires it not to (acceptance case 18).
type shadowUpdateCase struct {
	prefix  string
	desired map[string]any
	set     bool
	last    string
}

func newShadowUpdateCase(tc *TestContext) *shadowUpdateCase {
	desired, _, _ := tc.Config.Object("DESIRED_STATE")
	return &shadowUpdateCase{prefix: shadowPrefix(tc), desired: desired}
}

func (c *shadowUpdateCase) onConnect(*driver) *verdict { return nil }

func (c *shadowUpdateCase) onSubscribe(d *driver, filters []string) *verdict {
	for _, f := range filters {
		if service.TopicMatches(f, c.prefix+"/update/delta") || service.TopicMatches(f, c.prefix+"/update/documents") {
			return c.setUp(d)
		}
	}
	return nil
}

func (c *shadowUpdateCase) onSettle(d *driver) *verdict { return c.setUp(d) }

// setUp updates the shadow's desired state through the shadow service, once.
func (c *shadowUpdateCase) setUp(d *driver) *verdict {
	if c.set {
		return nil
	}
	c.set = true
	raw, err := json.Marshal(map[string]any{"state": map[string]any{"desired": c.desired}, "clientToken": shadowSetupToken})
	if err != nil {
		v := errVerdict("DESIRED_STATE: %v", err)
		return &v
	}
	if err := d.inject(c.prefix+"/update", raw); err != nil {
		v := errVerdict("setting DESIRED_STATE: the shadow service refused the update: %v", err)
		return &v
	}
	var delta, documents bool
	for _, m := range d.host.takeSent() {
		switch m.Topic {
		case c.prefix + "/update/delta":
			delta = true
			d.tc.Notef("DESIRED_STATE %s set (clientToken %s); delta delivered to the device: %v", compactJSON(c.desired), shadowSetupToken, m.delivered)
		case c.prefix + "/update/documents":
			documents = true
		}
	}
	switch {
	case delta:
		return nil
	case documents:
		v := errVerdict("the shadow's reported state already equals DESIRED_STATE %s: Device Advisor requires it not to (change it with `ggbroker shadow update %s`)", compactJSON(c.desired), d.tc.Thing)
		return &v
	}
	v := errVerdict("the shadow service did not accept the update that sets DESIRED_STATE %s", compactJSON(c.desired))
	return &v
}

func (c *shadowUpdateCase) onDevicePublish(d *driver, topic string, payload []byte) *verdict {
	if topic == c.prefix+"/update" {
		if r, ok := reportedOf(payload); ok {
			c.last = "the device last reported " + compactJSON(r)
		}
	}
	return nil
}

func (c *shadowUpdateCase) onServiceMessage(d *driver, m sentMessage) *verdict {
	if !c.set {
		return nil
	}
	switch m.Topic {
	case c.prefix + "/update/documents":
		var doc struct {
			Current struct {
				State struct {
					Reported map[string]any `json:"reported"`
				} `json:"state"`
			} `json:"current"`
		}
		if json.Unmarshal(m.Payload, &doc) == nil && holds(doc.Current.State.Reported, c.desired) {
			v := pass()
			return &v
		}
	case c.prefix + "/update/rejected":
		c.last = "the shadow service rejected the device's update: " + string(m.Payload)
		d.tc.Notef("%s", c.last)
	}
	return nil
}

func (c *shadowUpdateCase) waitingFor() string {
	if !c.set {
		return "waiting for the device to subscribe to " + c.prefix + "/update/delta"
	}
	s := "waiting for the device to report DESIRED_STATE " + compactJSON(c.desired) + " on " + c.prefix + "/update"
	if c.last != "" {
		s += " (" + c.last + ")"
	}
	return s
}

// jobCase is Job_Execution: the advisor creates a job for the thing through the jobs service's
// CreateJob API (or reuses JOB_JOBID's) once the device has subscribed to its notify-next or notify
// topic, or Options.Settle after it connected; the device must receive it and take its execution to
// SUCCEEDED with $aws/things/THING/jobs/JOBID/update. PASS on SUCCEEDED; FAIL on another terminal
// status or at EXECUTION_TIMEOUT (acceptance case 20). A job the advisor made that did not succeed
// is canceled at the end, so that a later run's device is not handed it first.
type jobCase struct {
	tc      *TestContext
	prefix  string
	thing   string
	arn     string
	jobID   string
	created bool // by this case, through CreateJob
	ready   bool // the job exists for the thing
	status  string
	last    string
}

func newJobCase(tc *TestContext, region, account string) *jobCase {
	id, _, _ := tc.Config.String("JOB_JOBID")
	if id == "" {
		id = "DeviceAdvisorJob-" + strconv.FormatInt(time.Now().UnixMilli(), 10)
	}
	return &jobCase{tc: tc, prefix: "$aws/things/" + tc.Thing + "/jobs/", thing: tc.Thing, jobID: id,
		arn: fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", region, account, tc.Thing)}
}

func (c *jobCase) onConnect(*driver) *verdict { return nil }

func (c *jobCase) onSubscribe(d *driver, filters []string) *verdict {
	for _, f := range filters {
		if service.TopicMatches(f, c.prefix+"notify-next") || service.TopicMatches(f, c.prefix+"notify") {
			return c.setUp(d)
		}
	}
	return nil
}

func (c *jobCase) onSettle(d *driver) *verdict { return c.setUp(d) }

// setUp creates the job with the CreateJob call Device Advisor makes, through the jobs service's own
// API handler, so that the device is notified as by a running broker.
func (c *jobCase) setUp(d *driver) *verdict {
	if c.ready {
		return nil
	}
	c.ready = true
	body := map[string]any{"targets": []string{c.arn}}
	doc, hasDoc, _ := c.tc.Config.String("JOB_DOCUMENT")
	src, hasSrc, _ := c.tc.Config.String("JOB_DOCUMENT_SOURCE")
	_, hasID, _ := c.tc.Config.String("JOB_JOBID")
	switch {
	case hasDoc:
		body["document"] = doc
	case hasSrc:
		body["documentSource"] = src // the service says why it cannot be fetched offline
	case hasID:
		// Reuse the job JOB_JOBID names: it must exist.
		if code, out := d.api("iot", http.MethodGet, "/jobs/"+c.jobID, ""); code != http.StatusOK {
			v := errVerdict("JOB_JOBID %s: DescribeJob answered %d %s", c.jobID, code, strings.TrimSpace(out))
			return &v
		}
		d.tc.Notef("reusing job %s (JOB_JOBID)", c.jobID)
		return nil
	}
	if role, ok, _ := c.tc.Config.String("JOB_PRESIGN_ROLE_ARN"); ok {
		exp, _, _ := c.tc.Config.Number("JOB_PRESIGN_EXPIRES_IN_SEC")
		if exp == 0 {
			exp = 3600
		}
		body["presignedUrlConfig"] = map[string]any{"roleArn": role, "expiresInSec": exp}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		v := errVerdict("CreateJob request: %v", err)
		return &v
	}
	code, out := d.api("iot", http.MethodPut, "/jobs/"+c.jobID, string(raw))
	switch {
	case code == http.StatusOK:
		c.created = true
		d.tc.Notef("created job %s for %s", c.jobID, c.thing)
	case code == http.StatusConflict && hasID:
		d.tc.Notef("job %s (JOB_JOBID) exists: reusing it", c.jobID)
	default:
		v := errVerdict("CreateJob %s answered %d: %s", c.jobID, code, strings.TrimSpace(out))
		return &v
	}
	return nil
}

func (c *jobCase) onDevicePublish(d *driver, topic string, _ []byte) *verdict {
	if !c.ready {
		return nil
	}
	switch topic {
	case c.prefix + c.jobID + "/get":
		d.tc.Notef("the device read job %s", c.jobID)
	case c.prefix + c.jobID + "/update", c.prefix + "start-next":
		code, out := d.api("iot", http.MethodGet, "/things/"+c.thing+"/jobs/"+c.jobID, "")
		var x struct {
			Execution struct {
				Status string `json:"status"`
			} `json:"execution"`
		}
		if code != http.StatusOK || json.Unmarshal([]byte(out), &x) != nil {
			return nil // not an execution of this thing (yet)
		}
		c.status = x.Execution.Status
		switch {
		case c.status == "SUCCEEDED":
			v := pass()
			return &v
		case terminal(c.status):
			v := fail("the device took job %s's execution to %s, not SUCCEEDED", c.jobID, c.status)
			return &v
		}
	}
	return nil
}

func (c *jobCase) onServiceMessage(d *driver, m sentMessage) *verdict {
	if strings.HasPrefix(m.Topic, c.prefix) && strings.HasSuffix(m.Topic, "/rejected") {
		c.last = "the jobs service rejected the device's request on " + strings.TrimSuffix(m.Topic, "/rejected") + ": " + string(m.Payload)
		d.tc.Notef("%s", c.last)
	}
	if m.Topic == c.prefix+"notify-next" || m.Topic == c.prefix+"notify" {
		d.tc.Notef("%s delivered to the device: %v", m.Topic, m.delivered)
	}
	return nil
}

// finish cancels a job this case created whose execution the device left unfinished.
func (c *jobCase) finish(d *driver, v verdict) {
	if !c.created || v.status == StatusPass || terminal(c.status) {
		return
	}
	if code, out := d.api("iot", http.MethodPut, "/jobs/"+c.jobID+"/cancel?force=true", `{"comment":"Device Advisor test case ended"}`); code != http.StatusOK {
		d.tc.Notef("canceling job %s: %d %s", c.jobID, code, strings.TrimSpace(out))
		return
	}
	d.tc.Notef("canceled job %s, which the device did not complete", c.jobID)
}

func (c *jobCase) waitingFor() string {
	if !c.ready {
		return "waiting for the device to subscribe to " + c.prefix + "notify-next"
	}
	s := "waiting for the device to take job " + c.jobID + " to SUCCEEDED on " + c.prefix + c.jobID + "/update"
	if c.status != "" {
		s += " (its execution is " + c.status + ")"
	}
	if c.last != "" {
		s += " (" + c.last + ")"
	}
	return s
}

// terminal reports whether a job execution status is final (the jobs service's terminal statuses).
func terminal(status string) bool {
	switch status {
	case "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED":
		return true
	}
	return false
}

// reportedOf is state.reported of a shadow update request.
func reportedOf(payload []byte) (map[string]any, bool) {
	var req struct {
		State struct {
			Reported map[string]any `json:"reported"`
		} `json:"state"`
	}
	if json.Unmarshal(payload, &req) != nil || req.State.Reported == nil {
		return nil, false
	}
	return req.State.Reported, true
}

// holds reports whether every attribute of want is in got with the same value, nested objects
// attribute by attribute (a reported state may hold more than the desired one).
func holds(got, want map[string]any) bool {
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			return false
		}
		wm, wIsObj := w.(map[string]any)
		gm, gIsObj := g.(map[string]any)
		switch {
		case wIsObj && gIsObj:
			if !holds(gm, wm) {
				return false
			}
		case !reflect.DeepEqual(g, w):
			return false
		}
	}
	return true
}

func compactJSON(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(raw)
}
