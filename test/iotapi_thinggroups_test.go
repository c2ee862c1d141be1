package test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/profile"
)

// TestThingGroupsThroughAPI: static thing groups with the AWS SDK: create (idempotent, conflicting),
// describe, update, list with a prefix and paging, membership both ways, delete.
func TestThingGroupsThroughAPI(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	for _, name := range []string{"sensor-1", "sensor-2"} {
		if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
	}
	props := &iottypes.ThingGroupProperties{ThingGroupDescription: aws.String("first floor"),
		AttributePayload: &iottypes.AttributePayload{Attributes: map[string]string{"building": "A"}}}
	created, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("floor-1"), ThingGroupProperties: props})
	if err != nil || aws.ToString(created.ThingGroupId) == "" || aws.ToString(created.ThingGroupArn) != "arn:aws:iot:us-east-1:123456789012:thinggroup/floor-1" {
		t.Fatalf("CreateThingGroup: %v %+v", err, created)
	}
	if again, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("floor-1"), ThingGroupProperties: props}); err != nil || aws.ToString(again.ThingGroupId) != aws.ToString(created.ThingGroupId) {
		t.Fatalf("creating the same group again: %v %+v", err, again)
	}
	var exists *iottypes.ResourceAlreadyExistsException
	if _, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("floor-1"),
		ThingGroupProperties: &iottypes.ThingGroupProperties{ThingGroupDescription: aws.String("other")}}); !errors.As(err, &exists) {
		t.Fatalf("conflicting create: %v", err)
	}
	var invalid *iottypes.InvalidRequestException
	if _, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("child"), ParentGroupName: aws.String("floor-1")}); !errors.As(err, &invalid) {
		t.Fatalf("a child group: %v, want InvalidRequestException (no hierarchies)", err)
	}
	for _, name := range []string{"floor-2", "roof"} {
		if _, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
	}

	up, err := c.UpdateThingGroup(ctx, &iot.UpdateThingGroupInput{ThingGroupName: aws.String("floor-1"), ExpectedVersion: aws.Int64(1),
		ThingGroupProperties: &iottypes.ThingGroupProperties{ThingGroupDescription: aws.String("ground floor"),
			AttributePayload: &iottypes.AttributePayload{Attributes: map[string]string{"wing": "east"}, Merge: true}}})
	if err != nil || up.Version != 2 {
		t.Fatalf("UpdateThingGroup: %v %+v", err, up)
	}
	var conflict *iottypes.VersionConflictException
	if _, err := c.UpdateThingGroup(ctx, &iot.UpdateThingGroupInput{ThingGroupName: aws.String("floor-1"), ExpectedVersion: aws.Int64(1),
		ThingGroupProperties: &iottypes.ThingGroupProperties{}}); !errors.As(err, &conflict) {
		t.Fatalf("stale expectedVersion: %v", err)
	}
	desc, err := c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("floor-1")})
	if err != nil || desc.Version != 2 || aws.ToString(desc.ThingGroupProperties.ThingGroupDescription) != "ground floor" ||
		desc.ThingGroupProperties.AttributePayload.Attributes["building"] != "A" || desc.ThingGroupProperties.AttributePayload.Attributes["wing"] != "east" ||
		desc.ThingGroupMetadata == nil || desc.ThingGroupMetadata.CreationDate == nil {
		t.Fatalf("DescribeThingGroup: %v %+v", err, desc)
	}

	var names []string
	pages := iot.NewListThingGroupsPaginator(c, &iot.ListThingGroupsInput{NamePrefixFilter: aws.String("floor-"), MaxResults: aws.Int32(1)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page.ThingGroups {
			names = append(names, aws.ToString(g.GroupName))
		}
	}
	if !slices.Equal(names, []string{"floor-1", "floor-2"}) {
		t.Fatalf("ListThingGroups with prefix floor-, one a page: %v", names)
	}

	add := func(group, thing string) {
		t.Helper()
		if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String(group), ThingName: aws.String(thing)}); err != nil {
			t.Fatalf("AddThingToThingGroup %s %s: %v", group, thing, err)
		}
	}
	add("floor-1", "sensor-2")
	add("floor-1", "sensor-1")
	add("roof", "sensor-1")
	// By ARN, as the CLI's --thing-group-arn/--thing-arn do.
	if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupArn: aws.String("arn:aws:iot:us-east-1:123456789012:thinggroup/floor-2"),
		ThingArn: aws.String("arn:aws:iot:us-east-1:123456789012:thing/sensor-2")}); err != nil {
		t.Fatalf("AddThingToThingGroup by ARN: %v", err)
	}
	var notFound *iottypes.ResourceNotFoundException
	if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("basement"), ThingName: aws.String("sensor-1")}); !errors.As(err, &notFound) {
		t.Fatalf("a group that does not exist: %v", err)
	}
	if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("roof"), ThingName: aws.String("ghost")}); !errors.As(err, &notFound) {
		t.Fatalf("a thing that does not exist: %v", err)
	}
	in, err := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("floor-1")})
	if err != nil || !slices.Equal(in.Things, []string{"sensor-1", "sensor-2"}) {
		t.Fatalf("ListThingsInThingGroup: %v %+v", err, in)
	}
	if gs := thingGroupsOf(t, ctx, c, "sensor-1"); !slices.Equal(gs, []string{"floor-1", "roof"}) {
		t.Fatalf("ListThingGroupsForThing sensor-1: %v", gs)
	}
	if _, err := c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("roof"), ThingName: aws.String("sensor-1")}); err != nil {
		t.Fatal(err)
	}
	if gs := thingGroupsOf(t, ctx, c, "sensor-1"); !slices.Equal(gs, []string{"floor-1"}) {
		t.Fatalf("after RemoveThingFromThingGroup: %v", gs)
	}
	// Deleting a thing takes it out of its groups.
	if _, err := c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("sensor-2")}); err != nil {
		t.Fatal(err)
	}
	if in, _ := c.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("floor-2")}); len(in.Things) != 0 {
		t.Fatalf("a deleted thing is still in floor-2: %v", in.Things)
	}
	if _, err := c.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("floor-1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("floor-1")}); !errors.As(err, &notFound) {
		t.Fatalf("DescribeThingGroup after delete: %v", err)
	}
	if gs := thingGroupsOf(t, ctx, c, "sensor-1"); len(gs) != 0 {
		t.Fatalf("sensor-1 is still in %v", gs)
	}
}

// TestThingGroupPolicy: a policy attached to a thing group applies to a connection that acts as a
// thing in the group, and only while it is in it; it is listed as the group's and among the
// policy's targets, and cannot be deleted while attached. A connection whose client ID is not the
// thing (iot-core) does not get the group's policies.
func TestThingGroupPolicy(t *testing.T) {
	const connectOnly = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":["arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}","arn:aws:iot:*:*:client/tool-*"]}]}`
	const floorPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/floor1/*"}]}`
	h := startAPIBroker(t, func(c *config.Config) { c.Behaviour.Profile = profile.IoTCore })
	c := h.iotClient(t)
	ctx := context.Background()
	d := provisionViaAPI(t, c, "sensor-1", "connect-only", connectOnly)
	groupArn := "arn:aws:iot:us-east-1:123456789012:thinggroup/floor-1"
	if _, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("floor-1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("floor"), PolicyDocument: aws.String(floorPolicy)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String("floor"), Target: aws.String(groupArn)}); err != nil {
		t.Fatalf("AttachPolicy to a thing group: %v", err)
	}
	// publishAs connects anew (a connect sees the registry as it is now) and returns the PUBACK code.
	publishAs := func(clientID string) byte {
		t.Helper()
		_, cl, err := h.connectV5(d, clientID, nil)
		if err != nil {
			t.Fatalf("connect as %s: %v", clientID, err)
		}
		defer cl.Disconnect(&paho.Disconnect{})
		return publishV5(t, cl, "floor1/temp", 1, "21")
	}
	if got := publishAs("sensor-1"); got != 0x87 {
		t.Fatalf("publish before sensor-1 is in the group: 0x%02x, want 0x87", got)
	}
	if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("floor-1"), ThingName: aws.String("sensor-1")}); err != nil {
		t.Fatal(err)
	}
	if got := publishAs("sensor-1"); got != 0 {
		t.Fatalf("publish as a member of floor-1: 0x%02x, want 0 (the group's policy allows it)", got)
	}
	if got := publishAs("tool-1"); got != 0x87 {
		t.Fatalf("publish as tool-1 (not the thing): 0x%02x, want 0x87", got)
	}

	attached, err := c.ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: aws.String(groupArn)})
	if err != nil || len(attached.Policies) != 1 || aws.ToString(attached.Policies[0].PolicyName) != "floor" {
		t.Fatalf("ListAttachedPolicies of the group: %v %+v", err, attached)
	}
	targets, err := c.ListTargetsForPolicy(ctx, &iot.ListTargetsForPolicyInput{PolicyName: aws.String("floor")})
	if err != nil || !slices.Equal(targets.Targets, []string{groupArn}) {
		t.Fatalf("ListTargetsForPolicy: %v %+v", err, targets)
	}
	var conflict *iottypes.DeleteConflictException
	if _, err := c.DeletePolicy(ctx, &iot.DeletePolicyInput{PolicyName: aws.String("floor")}); !errors.As(err, &conflict) {
		t.Fatalf("DeletePolicy while attached to a group: %v", err)
	}

	if _, err := c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("floor-1"), ThingName: aws.String("sensor-1")}); err != nil {
		t.Fatal(err)
	}
	if got := publishAs("sensor-1"); got != 0x87 {
		t.Fatalf("publish once removed from the group: 0x%02x, want 0x87", got)
	}
	if _, err := c.DetachPolicy(ctx, &iot.DetachPolicyInput{PolicyName: aws.String("floor"), Target: aws.String(groupArn)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeletePolicy(ctx, &iot.DeletePolicyInput{PolicyName: aws.String("floor")}); err != nil {
		t.Fatalf("DeletePolicy once detached: %v", err)
	}
}

// TestPolicyCheckCountsThingGroups: `ggbroker policy check` evaluates the policies of the thing's
// groups too, as the broker does, so that it answers what a connection would get.
func TestPolicyCheckCountsThingGroups(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"floor":        `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/floor1/*"}]}`,
		"connect-only": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}]}`,
	} {
		doc := filepath.Join(dir, name+".json")
		if err := os.WriteFile(doc, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, dir, "policy", "create", name, doc)
	}
	run(t, dir, "device", "create", "sensor-1", "--policy", "connect-only")
	check := []string{"policy", "check", "--action", "iot:Publish", "--resource", "topic/floor1/temp", "--client-id", "sensor-1"}
	if code, out := exitCode(t, dir, check...); code != 1 {
		t.Fatalf("before the group: exit %d, want 1\n%s", code, out)
	}
	// The registry as the API leaves it: a group with sensor-1 in it and the policy attached.
	reg, err := auth.OpenRegistry(filepath.Join(dir, "ggbroker-data", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateThingGroup(auth.ThingGroup{Name: "floor-1"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetGroupMember("floor-1", "sensor-1", true); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetGroupPolicy("floor-1", "floor", true); err != nil {
		t.Fatal(err)
	}
	if code, out := exitCode(t, dir, check...); code != 0 {
		t.Fatalf("with the group's policy: exit %d, want 0\n%s", code, out)
	}
}

// thingGroupsOf is ListThingGroupsForThing's answer for thing: the group names, in order.
func thingGroupsOf(t *testing.T, ctx context.Context, c *iot.Client, thing string) []string {
	t.Helper()
	out, err := c.ListThingGroupsForThing(ctx, &iot.ListThingGroupsForThingInput{ThingName: aws.String(thing)})
	if err != nil {
		t.Fatal(err)
	}
	var gs []string
	for _, g := range out.ThingGroups {
		gs = append(gs, aws.ToString(g.GroupName))
	}
	return gs
}
