package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
)

// TestJobsControlPlaneWithSDK drives the jobs operations through the real API listener (SigV4) with the
// AWS SDK for Go v2, while a device follows over MQTT.
func TestJobsControlPlaneWithSDK(t *testing.T) {
	h := startAPIBroker(t, nil)
	d := h.createDevice("t1")
	h.createDevice("t2")
	dev := h.connectJobs(d)
	dev.subscribe(jobsTopics("t1")...)
	c := h.iotClient(t)
	ctx := context.Background()
	arn := func(th string) string {
		return "arn:aws:iot:" + h.cfg.Core.Region + ":" + h.cfg.Core.AccountID + ":thing/" + th
	}

	out, err := c.CreateJob(ctx, &iot.CreateJobInput{
		JobId: aws.String("Job1"), Targets: []string{arn("t1"), arn("t2")}, Document: aws.String(`{"ToDo":"Reboot"}`),
		Description: aws.String("reboot"), TargetSelection: types.TargetSelectionSnapshot,
		TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(30)},
	})
	if err != nil || aws.ToString(out.JobArn) != "arn:aws:iot:"+h.cfg.Core.Region+":"+h.cfg.Core.AccountID+":job/Job1" || aws.ToString(out.Description) != "reboot" {
		t.Fatalf("CreateJob: %+v %v", out, err)
	}
	if nn := dev.expect("$aws/things/t1/jobs/notify-next"); field(nn, "execution", "jobId") != "Job1" {
		t.Fatalf("notify-next: %v", nn)
	}

	// Errors arrive as the SDK's modeled exceptions.
	errCases := []struct {
		name string
		call func() error
		want any
	}{
		{"exists", func() error {
			_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("Job1"), Targets: []string{arn("t1")}, Document: aws.String(`{}`)})
			return err
		}, new(*types.ResourceAlreadyExistsException)},
		{"documentSource", func() error {
			_, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("Job9"), Targets: []string{arn("t1")}, DocumentSource: aws.String("https://s3.amazonaws.com/b/k")})
			return err
		}, new(*types.InvalidRequestException)},
		{"no such job", func() error {
			_, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("Nope")})
			return err
		}, new(*types.ResourceNotFoundException)},
		{"delete in progress", func() error { _, err := c.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("Job1")}); return err }, new(*types.InvalidStateTransitionException)},
		{"version conflict", func() error {
			_, err := c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("Job1"), ThingName: aws.String("t2"), ExpectedVersion: aws.Int64(7)})
			return err
		}, new(*types.VersionConflictException)},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !errors.As(err, tc.want) {
				t.Fatalf("error %v (%T), want %T", err, err, tc.want)
			}
		})
	}

	desc, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("Job1")})
	if err != nil || desc.Job.Status != types.JobStatusInProgress || aws.ToInt32(desc.Job.JobProcessDetails.NumberOfQueuedThings) != 2 ||
		desc.Job.CreatedAt == nil || time.Since(*desc.Job.CreatedAt) > time.Minute || aws.ToInt64(desc.Job.TimeoutConfig.InProgressTimeoutInMinutes) != 30 {
		t.Fatalf("DescribeJob: %+v %v", desc, err)
	}
	doc, err := c.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: aws.String("Job1")})
	if err != nil || aws.ToString(doc.Document) != `{"ToDo":"Reboot"}` {
		t.Fatalf("GetJobDocument: %+v %v", doc, err)
	}
	if _, err := c.UpdateJob(ctx, &iot.UpdateJobInput{JobId: aws.String("Job1"), Description: aws.String("reboot now")}); err != nil {
		t.Fatalf("UpdateJob: %v", err)
	}

	// The device starts and finishes; t2's execution is canceled: the job completes.
	dev.publish("$aws/things/t1/jobs/start-next", `{}`)
	dev.expect("$aws/things/t1/jobs/start-next/accepted")
	ex, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("Job1"), ThingName: aws.String("t1")})
	if err != nil || ex.Execution.Status != types.JobExecutionStatusInProgress || ex.Execution.VersionNumber != 2 || ex.Execution.StartedAt == nil ||
		aws.ToInt64(ex.Execution.ApproximateSecondsBeforeTimedOut) <= 0 || aws.ToString(ex.Execution.ThingArn) != arn("t1") {
		t.Fatalf("DescribeJobExecution: %+v %v", ex, err)
	}
	dev.publish("$aws/things/t1/jobs/Job1/update", `{"status":"SUCCEEDED"}`)
	dev.expect("$aws/things/t1/jobs/Job1/update/accepted")
	if _, err := c.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("Job1"), ThingName: aws.String("t2"), ExpectedVersion: aws.Int64(1)}); err != nil {
		t.Fatalf("CancelJobExecution: %v", err)
	}
	desc, _ = c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("Job1")})
	if desc.Job.Status != types.JobStatusCompleted || aws.ToString(desc.Job.Description) != "reboot now" || desc.Job.CompletedAt == nil ||
		aws.ToInt32(desc.Job.JobProcessDetails.NumberOfSucceededThings) != 1 || aws.ToInt32(desc.Job.JobProcessDetails.NumberOfCanceledThings) != 1 {
		t.Fatalf("job after its executions ended: %+v", desc.Job)
	}
	forJob, err := c.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("Job1")})
	if err != nil || len(forJob.ExecutionSummaries) != 2 {
		t.Fatalf("ListJobExecutionsForJob: %+v %v", forJob, err)
	}
	forThing, err := c.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("t1"), Status: types.JobExecutionStatusSucceeded})
	if err != nil || len(forThing.ExecutionSummaries) != 1 || aws.ToString(forThing.ExecutionSummaries[0].JobId) != "Job1" {
		t.Fatalf("ListJobExecutionsForThing: %+v %v", forThing, err)
	}

	// Paging through ListJobs, then CancelJob with force, DeleteJobExecution and DeleteJob.
	for _, id := range []string{"Job2", "Job3"} {
		if _, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String(id), Targets: []string{arn("t1")}, Document: aws.String(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for p := iot.NewListJobsPaginator(c, &iot.ListJobsInput{MaxResults: aws.Int32(2)}); p.HasMorePages(); {
		pg, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range pg.Jobs {
			ids = append(ids, aws.ToString(j.JobId))
		}
	}
	if strings.Join(ids, ",") != "Job1,Job2,Job3" {
		t.Fatalf("ListJobs pages: %v", ids)
	}
	dev.publish("$aws/things/t1/jobs/Job2/update", `{"status":"IN_PROGRESS"}`)
	dev.expect("$aws/things/t1/jobs/Job2/update/accepted")
	if _, err := c.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("Job2"), Force: true, Comment: aws.String("stop")}); err != nil {
		t.Fatalf("CancelJob: %v", err)
	}
	ex, _ = c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("Job2"), ThingName: aws.String("t1")})
	if ex.Execution.Status != types.JobExecutionStatusCanceled || !aws.ToBool(ex.Execution.ForceCanceled) {
		t.Fatalf("force-canceled execution: %+v", ex.Execution)
	}
	if _, err := c.DeleteJobExecution(ctx, &iot.DeleteJobExecutionInput{JobId: aws.String("Job2"), ThingName: aws.String("t1"), ExecutionNumber: aws.Int64(1)}); err != nil {
		t.Fatalf("DeleteJobExecution: %v", err)
	}
	if _, err := c.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("Job3"), Force: true}); err != nil {
		t.Fatalf("DeleteJob: %v", err)
	}
	if _, err := c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("Job3")}); !errors.As(err, new(*types.ResourceNotFoundException)) {
		t.Fatalf("deleted job: %v", err)
	}
}

// TestJobsDataPlaneSigV4: the iot-jobs-data API on the API listener, signed with the AWS SDK's SigV4
// signer for the iot-jobs-data signing name (the iotjobsdataplane client module is not in the module
// proxy this project builds with, so the request is made by hand with the SDK's signer).
func TestJobsDataPlaneSigV4(t *testing.T) {
	h := startAPIBroker(t, nil)
	h.createDevice("t1")
	h.createJob("Job1", `{"ToDo":"Reboot"}`, "t1")
	cfg := h.apiConfig(t)
	creds, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, map[string]any, string) {
		t.Helper()
		req, _ := http.NewRequest(method, h.apiURL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "iot-jobs-data", h.cfg.Core.Region, time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := cfg.HTTPClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		_ = dec.Decode(&v)
		return resp.StatusCode, v, resp.Header.Get("x-amzn-ErrorType")
	}
	if code, v, _ := call("GET", "/things/t1/jobs", ""); code != 200 || len(v["queuedJobs"].([]any)) != 1 {
		t.Fatalf("GetPendingJobExecutions: %d %v", code, v)
	}
	if code, v, _ := call("PUT", "/things/t1/jobs/$next", `{}`); code != 200 || field(v, "execution", "jobId") != "Job1" || field(v, "execution", "jobDocument") != `{"ToDo":"Reboot"}` {
		t.Fatalf("StartNextPendingJobExecution: %d %v", code, v)
	}
	if code, v, _ := call("POST", "/things/t1/jobs/Job1", `{"status":"SUCCEEDED","expectedVersion":2,"includeJobExecutionState":true}`); code != 200 || field(v, "executionState", "status") != "SUCCEEDED" {
		t.Fatalf("UpdateJobExecution: %d %v", code, v)
	}
	if code, v, kind := call("GET", "/things/t1/jobs/Job1?executionNumber=9", ""); code != 404 || kind != "ResourceNotFoundException" {
		t.Fatalf("unknown execution number: %d %s %v", code, kind, v)
	}
	// The signing name routes: the same path signed for iot is the control plane's DescribeJobExecution.
	c := h.iotClient(t)
	ex, err := c.DescribeJobExecution(context.Background(), &iot.DescribeJobExecutionInput{JobId: aws.String("Job1"), ThingName: aws.String("t1")})
	if err != nil || ex.Execution.Status != types.JobExecutionStatusSucceeded {
		t.Fatalf("control-plane DescribeJobExecution: %+v %v", ex, err)
	}
}
