// Package policy decides, offline, what an MQTT client may do, with the answer
// AWS IoT Core (or the Greengrass client device auth component) would give.
//
// Two policy forms compile into the same engine:
//
//   - AWS IoT policy documents (JSON, Version 2012-10-17), parsed by
//     [ParseDocument];
//   - the Greengrass V2 client device auth component's deviceGroups block,
//     parsed by [ParseDeviceGroups] or [ParseDeviceGroupsValue], whose
//     policies are mapped onto iot:Connect, iot:Publish and iot:Subscribe.
//
// Everything is parsed and compiled once; [Set.Evaluate] does no parsing, no
// regular expressions and, on the path that allows a request, no allocation:
// the broker calls it for every publish, every subscription filter and every
// message delivered to every subscriber (iot:Receive), in the publisher's
// goroutine. Resources are matched against the virtual concatenation of the
// ARN prefix and the request's name, and policy variables are compared piece
// by piece against the context, so no string is ever built to match it.
//
// Evaluation follows IAM's rules as AWS IoT documents them
// (reference/aws-iot-core/iot-policies.md): default deny, an explicit Deny in
// any policy of the [Set] beats every Allow, and the answer is one of the
// TestAuthorization values ALLOWED, EXPLICIT_DENY and IMPLICIT_DENY, with a
// [Diagnostic] naming the statement that decided.
package policy
