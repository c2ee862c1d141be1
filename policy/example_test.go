package policy_test

import (
	"fmt"

	"github.com/ggbroker/ggbroker/policy"
)

// A device policy is parsed and compiled once; each request is then decided with a Diagnostic that
// names the deciding statement.
func Example() {
	doc := []byte(`{
	  "Version": "2012-10-17",
	  "Statement": [
	    {"Sid": "OwnTopics", "Effect": "Allow", "Action": "iot:Publish",
	     "Resource": "arn:aws:iot:*:*:topic/sensors/${iot:Connection.Thing.ThingName}/*"},
	    {"Sid": "NoFirmware", "Effect": "Deny", "Action": "iot:Publish",
	     "Resource": "arn:aws:iot:*:*:topic/sensors/*/firmware"}
	  ]}`)
	p, err := policy.ParseDocument("sensor-policy", doc)
	if err != nil {
		fmt.Println(err)
		return
	}
	set := policy.NewSet(policy.Env{Region: "eu-west-1", AccountID: "123456789012"}, p)
	ctx := &policy.Context{ClientID: "sensor-1", Thing: &policy.Thing{Name: "sensor-1"}}
	for _, topic := range []string{"sensors/sensor-1/temperature", "sensors/sensor-2/temperature", "sensors/sensor-1/firmware"} {
		d, diag := set.Evaluate(policy.Request{Action: "iot:Publish", Kind: "topic", Name: topic, Context: ctx})
		fmt.Printf("%s %s (%s)\n", topic, d, diag.Sid)
	}
	// Output:
	// sensors/sensor-1/temperature ALLOWED (OwnTopics)
	// sensors/sensor-2/temperature IMPLICIT_DENY ()
	// sensors/sensor-1/firmware EXPLICIT_DENY (NoFirmware)
}
