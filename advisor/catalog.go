package advisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// defaultTimeout is EXECUTION_TIMEOUT when neither the case nor Options say (advisor.md §1: 300 s
// unless stated).
const defaultTimeout = 300 * time.Second

// ConfigKey documents one configuration key a test case reads.
type ConfigKey struct {
	Name     string
	Default  string // "" when there is none
	Required bool
	Doc      string
}

// testDef is one test case of the catalogue.
type testDef struct {
	id       string
	category string
	// timeout is EXECUTION_TIMEOUT's default for this case.
	timeout time.Duration
	keys    []ConfigKey
	// check validates the configuration when the suite is loaded: a bad value refuses the suite
	// (acceptance cases 12 and 14), before any case runs.
	check func(Config) error
	run   func(ctx context.Context, tc *testCtx) verdict
	// service is the ggbroker service the case needs ("shadow", "jobs"), "" if none.
	service string
}

var timeoutKey = ConfigKey{Name: "EXECUTION_TIMEOUT", Doc: "seconds before the case ends without a verdict (FAIL)"}

func keys(ks ...ConfigKey) []ConfigKey { return append([]ConfigKey{timeoutKey}, ks...) }

var (
	triggerTopicKey   = ConfigKey{Name: "TRIGGER_TOPIC", Doc: "topic the device subscribes to with QoS 1 and the endpoint publishes on; when unset, the first filter the device subscribes to with QoS 1 (without wildcards)"}
	pubTopicKey       = ConfigKey{Name: "TOPIC_FOR_PUBLISH_VALIDATION", Doc: "topic the device's PUBLISH must have; any when unset"}
	pubPayloadKey     = ConfigKey{Name: "PAYLOAD_FOR_PUBLISH_VALIDATION", Doc: "payload the device's PUBLISH must have; any when unset"}
	subTopicsKey      = ConfigKey{Name: "TOPIC_LIST_FOR_SUBSCRIPTION_VALIDATION_ID", Doc: "topic filters the device must subscribe to (a list); any when unset"}
	reconnectAttempts = ConfigKey{Name: "RECONNECTION_ATTEMPTS", Default: "5", Doc: "reconnection attempts timed, 5 to 10"}
)

// catalogue lists every test case, in the order of advisor.md §3.
var catalogue = []*testDef{
	{id: "TLS_Connect", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runTLSConnect},
	{id: "TLS_Unsecure_Server_Cert", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runUnsecureServerCert},
	{id: "TLS_Incorrect_Subject_Name_Server_Cert", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runIncorrectSubjectName},
	{id: "TLS_Expired_Server_Cert", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runExpiredServerCert},
	{id: "TLS_Large_Size_Server_Cert", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runLargeServerCert},
	{id: "TLS_Support_AWS_IoT_Cipher_Suites", category: "TLS", timeout: defaultTimeout, keys: keys(), run: runCipherSuites},
	{id: "TLS_Receive_Maximum_Size_Fragments", category: "TLS", timeout: defaultTimeout, run: runMaxFragments,
		keys: keys(triggerTopicKey, ConfigKey{Name: "PAYLOAD_FORMAT", Doc: "payload with a ${payload} placeholder for the 16 KiB string; the plain string when unset"})},
	{id: "MQTT_Connect", category: "MQTT", timeout: defaultTimeout, keys: keys(), run: runMQTTConnect},
	{id: "MQTT_Connect_Jitter_Backoff_Retries", category: "MQTT", timeout: defaultTimeout, keys: keys(), run: runJitterBackoff},
	{id: "MQTT_Connect_Exponential_Backoff_Retries", category: "MQTT", timeout: defaultTimeout, keys: keys(), run: runExponentialBackoff},
	{id: "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect", category: "MQTT", timeout: defaultTimeout, keys: keys(reconnectAttempts), check: checkReconnectAttempts, run: runServerDisconnectBackoff},
	{id: "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection", category: "MQTT", timeout: defaultTimeout, keys: keys(reconnectAttempts), check: checkReconnectAttempts, run: runUnstableBackoff},
	{id: "MQTT_Publish", category: "MQTT", timeout: defaultTimeout, keys: keys(pubTopicKey, pubPayloadKey), run: runPublish},
	{id: "MQTT_Publish_Retry_No_Puback", category: "MQTT", timeout: defaultTimeout, keys: keys(pubTopicKey, pubPayloadKey), run: runPublishRetry},
	{id: "MQTT_Subscribe", category: "MQTT", timeout: defaultTimeout, keys: keys(subTopicsKey), check: checkSubTopics, run: runSubscribe},
	{id: "MQTT_Subscribe_Retry_No_Suback", category: "MQTT", timeout: defaultTimeout, keys: keys(subTopicsKey), check: checkSubTopics, run: runSubscribeRetry},
	{id: "MQTT_Client_Puback_QoS1", category: "MQTT", timeout: defaultTimeout, check: checkPayloadSize, run: runClientPuback,
		keys: keys(triggerTopicKey, pubPayloadKey, ConfigKey{Name: "PAYLOAD_SIZE", Doc: "payload size in KB, 0 to 128 (overrides PAYLOAD_FOR_PUBLISH_VALIDATION)"})},
	{id: "MQTT_No_Ack_PingResp", category: "MQTT", timeout: defaultTimeout, keys: keys(), run: runNoAckPingResp},
	{id: "MQTT_Persistent_Session_Happy_Case", category: "MQTT", timeout: defaultTimeout, check: requireKey("TRIGGER_TOPIC"), run: runPersistentSession,
		keys: keys(ConfigKey{Name: "TRIGGER_TOPIC", Required: true, Doc: "topic the device subscribes to with QoS 1 in its persistent session"}, ConfigKey{Name: "PAYLOAD", Doc: "payload of the stored message"})},
	{id: "MQTT_Expired_Persistent_Session", category: "MQTT", timeout: defaultTimeout, check: requireKey("TRIGGER_TOPIC"), run: runExpiredSession,
		keys: keys(ConfigKey{Name: "TRIGGER_TOPIC", Required: true, Doc: "topic the device must subscribe to again"})},
	{id: "Shadow_Publish_Reported_State", category: "Shadow", timeout: defaultTimeout, service: "shadow", check: checkShadowPublish,
		keys: keys(ConfigKey{Name: "SHADOW_NAME", Doc: "named shadow; the classic shadow when unset"}, ConfigKey{Name: "REPORTED_STATE", Doc: "reported state (object) the device must publish; any when unset"})},
	{id: "Shadow_Update_Reported_State", category: "Shadow", timeout: defaultTimeout, service: "shadow", check: checkShadowUpdate,
		keys: keys(ConfigKey{Name: "DESIRED_STATE", Required: true, Doc: "desired state (object, at least one attribute) the device must report back"}, ConfigKey{Name: "SHADOW_NAME", Doc: "named shadow; the classic shadow when unset"})},
	{id: "Job_Execution", category: "Jobs", timeout: defaultTimeout, service: "jobs", check: checkJob,
		keys: keys(ConfigKey{Name: "JOB_DOCUMENT", Doc: "job document (JSON string)"}, ConfigKey{Name: "JOB_DOCUMENT_SOURCE", Doc: "S3 URL of the document, used only when JOB_DOCUMENT is unset"},
			ConfigKey{Name: "JOB_JOBID", Doc: "job ID; mandatory when neither document key is set"}, ConfigKey{Name: "JOB_PRESIGN_ROLE_ARN"},
			ConfigKey{Name: "JOB_PRESIGN_EXPIRES_IN_SEC", Default: "3600", Doc: "60 to 3600"})},
	{id: "Security_Device_Policies", category: "Permissions", timeout: 60 * time.Second, keys: keys(), run: runDevicePolicies},
}

// QualificationTests are the test cases of AWS' current qualification suite (DA-TESTS, revised
// list; advisor.md §2), in that page's order.
var QualificationTests = []string{
	"TLS_Connect", "TLS_Incorrect_Subject_Name_Server_Cert", "TLS_Unsecure_Server_Cert",
	"TLS_Support_AWS_IoT_Cipher_Suites", "TLS_Receive_Maximum_Size_Fragments", "TLS_Expired_Server_Cert",
	"TLS_Large_Size_Server_Cert", "MQTT_Connect", "MQTT_Subscribe", "MQTT_Publish", "MQTT_Connect_Jitter_Backoff_Retries",
}

// aliases are older spellings of test IDs that suites written for AWS may still use.
var aliases = map[string]string{"MQTT_Client_Puback_Qos1": "MQTT_Client_Puback_QoS1"}

func lookup(id string) (*testDef, bool) {
	if a, ok := aliases[id]; ok {
		id = a
	}
	for _, d := range catalogue {
		if d.id == id {
			return d, true
		}
	}
	return nil, false
}

// TestCase describes one test case of the catalogue, for `--help` and the README.
type TestCase struct {
	ID, Category string
	Timeout      time.Duration
	Keys         []ConfigKey
	Service      string
}

// Catalogue lists every test case ggbroker runs, in order.
func Catalogue() []TestCase {
	out := make([]TestCase, 0, len(catalogue))
	for _, d := range catalogue {
		out = append(out, TestCase{ID: d.id, Category: d.category, Timeout: d.timeout, Keys: d.keys, Service: d.service})
	}
	return out
}

// IDs lists the test IDs, sorted.
func IDs() []string {
	out := make([]string, 0, len(catalogue))
	for _, d := range catalogue {
		out = append(out, d.id)
	}
	sort.Strings(out)
	return out
}

func requireKey(key string) func(Config) error {
	return func(c Config) error {
		s, ok, err := c.String(key)
		if err != nil {
			return err
		}
		if !ok || s == "" {
			return fmt.Errorf("%s is required", key)
		}
		return nil
	}
}

func checkReconnectAttempts(c Config) error {
	n, ok, err := c.Number("RECONNECTION_ATTEMPTS")
	if err != nil || !ok {
		return err
	}
	if n != float64(int(n)) || n < 5 || n > 10 {
		return fmt.Errorf("RECONNECTION_ATTEMPTS: %v is outside 5 to 10", n)
	}
	return nil
}

func reconnectionAttempts(c Config) int {
	n, ok, _ := c.Number("RECONNECTION_ATTEMPTS")
	if !ok {
		return 5
	}
	return int(n)
}

func checkPayloadSize(c Config) error {
	n, ok, err := c.Number("PAYLOAD_SIZE")
	if err != nil || !ok {
		return err
	}
	if n < 0 || n > 128 {
		return fmt.Errorf("PAYLOAD_SIZE: %v KB is outside 0 to 128", n)
	}
	return nil
}

func checkSubTopics(c Config) error {
	_, _, err := c.Strings("TOPIC_LIST_FOR_SUBSCRIPTION_VALIDATION_ID")
	return err
}

func checkShadowPublish(c Config) error {
	if _, _, err := c.String("SHADOW_NAME"); err != nil {
		return err
	}
	_, _, err := c.Object("REPORTED_STATE")
	return err
}

func checkShadowUpdate(c Config) error {
	m, ok, err := c.Object("DESIRED_STATE")
	if err != nil {
		return err
	}
	if !ok || len(m) == 0 {
		return errors.New("DESIRED_STATE is required and must have at least one attribute")
	}
	_, _, err = c.String("SHADOW_NAME")
	return err
}

func checkJob(c Config) error {
	doc, hasDoc, err := c.String("JOB_DOCUMENT")
	if err != nil {
		return err
	}
	_, hasSrc, err := c.String("JOB_DOCUMENT_SOURCE")
	if err != nil {
		return err
	}
	_, hasID, err := c.String("JOB_JOBID")
	if err != nil {
		return err
	}
	if !hasDoc && !hasSrc && !hasID {
		return errors.New("JOB_JOBID is mandatory when neither JOB_DOCUMENT nor JOB_DOCUMENT_SOURCE is set")
	}
	if hasDoc {
		if _, _, err := (Config{"d": doc}).Object("d"); err != nil {
			return fmt.Errorf("JOB_DOCUMENT: not a JSON object")
		}
	}
	if n, ok, err := c.Number("JOB_PRESIGN_EXPIRES_IN_SEC"); err != nil {
		return err
	} else if ok && (n < 60 || n > 3600) {
		return fmt.Errorf("JOB_PRESIGN_EXPIRES_IN_SEC: %v is outside 60 to 3600", n)
	}
	return nil
}
