package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/spf13/cobra"

	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/jobs"
	"github.com/ggbroker/ggbroker/service"
	"github.com/ggbroker/ggbroker/state"
)

// jobsNote is what every job command's help says about where it acts.
const jobsNote = `Where they act: while a broker serves the state directory, through its AWS IoT API (the controlPlane
listener, SigV4 with the keys of <stateDir>/credentials, profile ggbroker), so that connected devices are told
at once (notify, notify-next); --endpoint-url names the listener when controlPlane.listen has port 0. While no
broker runs, directly on <stateDir>/services.db, holding the state directory's serve lock so that no broker
starts meanwhile; devices then learn of new jobs with get or start-next when they connect.`

func newJobCommand(g *globalFlags) *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Create, list, describe and cancel AWS IoT Jobs for client devices",
		Long: `Manage the AWS IoT Jobs the broker serves to devices on $aws/things/THING/jobs/... (see jobs/README.md).

` + jobsNote,
	}
	cmd.PersistentFlags().StringVar(&endpoint, "endpoint-url", "", "the running broker's AWS API listener, https://HOST:PORT (default: from controlPlane.listen)")
	cmd.AddCommand(newJobCreateCommand(g, &endpoint), newJobListCommand(g, &endpoint), newJobDescribeCommand(g, &endpoint), newJobCancelCommand(g, &endpoint))
	return cmd
}

func newJobCreateCommand(g *globalFlags, endpoint *string) *cobra.Command {
	var things []string
	var docFile, jobID string
	cmd := &cobra.Command{
		Use:   "create --thing T [--thing T2] --document FILE [--job-id ID]",
		Short: "Create a SNAPSHOT job with a JSON document for one or more things",
		Long: `Create a job: one QUEUED execution per thing, each thing's devices get it with get, start-next or
$next/get. The document is a JSON object of at most 32768 characters; S3 presigned-URL placeholders are
refused (no S3 offline). Without --job-id, an ID like job-20261201-100000-1a2b3c is made.

` + jobsNote,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(things) == 0 {
				return errors.New("--thing is required (repeat it for several things)")
			}
			if docFile == "" {
				return errors.New("--document FILE is required (- reads standard input)")
			}
			raw, err := readDocument(cmd.InOrStdin(), docFile)
			if err != nil {
				return err
			}
			doc := string(bytes.TrimSpace(raw))
			if jobID == "" {
				jobID = newJobID()
			}
			return withJobs(g, *endpoint, func(b jobsBackend) error {
				arn, err := b.create(jobID, doc, things)
				if err != nil {
					return fmt.Errorf("create job %s: %w", jobID, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created job %s (%s) for %s\n", jobID, arn, strings.Join(things, ", "))
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&things, "thing", nil, "target thing name (repeatable)")
	cmd.Flags().StringVar(&docFile, "document", "", "job document file (JSON object; - for standard input)")
	cmd.Flags().StringVar(&jobID, "job-id", "", "job ID: 1-64 characters of [a-zA-Z0-9_-] (default: generated)")
	return cmd
}

func newJobListCommand(g *globalFlags, endpoint *string) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the jobs with their status and targets",
		Long:  "List every job, oldest first.\n\n" + jobsNote,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withJobs(g, *endpoint, func(b jobsBackend) error {
				list, err := b.list()
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "JOB ID\tSTATUS\tSELECTION\tCREATED\tTHINGS")
				for _, j := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", j.id, j.status, j.selection, j.created.UTC().Format(time.RFC3339), strings.Join(j.things, ","))
				}
				return w.Flush()
			})
		},
	}
}

func newJobDescribeCommand(g *globalFlags, endpoint *string) *cobra.Command {
	return &cobra.Command{
		Use:   "describe ID",
		Short: "Show a job, its execution counts and its executions",
		Long:  "Show a job as DescribeJob answers it, then one line per execution.\n\n" + jobsNote,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJobs(g, *endpoint, func(b jobsBackend) error {
				j, err := b.describe(args[0])
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "job %s (%s)\nstatus %s, %s, created %s\n", j.id, j.arn, j.status, j.selection, j.created.UTC().Format(time.RFC3339))
				if j.description != "" {
					fmt.Fprintf(out, "description %s\n", j.description)
				}
				var counts []string
				for _, s := range jobs.AllExecutionStatuses {
					counts = append(counts, fmt.Sprintf("%s %d", s, j.counts[string(s)]))
				}
				fmt.Fprintf(out, "executions: %s\n\n", strings.Join(counts, ", "))
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "THING\tEXECUTION\tSTATUS\tLAST UPDATED")
				for _, x := range j.execs {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", x.thing, x.number, x.status, x.updated.UTC().Format(time.RFC3339))
				}
				return w.Flush()
			})
		},
	}
}

func newJobCancelCommand(g *globalFlags, endpoint *string) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job: its QUEUED executions (with --force, its IN_PROGRESS ones too)",
		Long:  "Cancel a job, as CancelJob does.\n\n" + jobsNote,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJobs(g, *endpoint, func(b jobsBackend) error {
				if err := b.cancel(args[0], force); err != nil {
					return fmt.Errorf("cancel job %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "canceled job %s\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also cancel executions that are IN_PROGRESS")
	return cmd
}

// jobInfo is a job as the commands print it, from either backend.
type jobInfo struct {
	id, arn, status, selection, description string
	created                                 time.Time
	things                                  []string
	counts                                  map[string]int
	execs                                   []execInfo
}

type execInfo struct {
	thing, status string
	number        int64
	updated       time.Time
}

// jobsBackend is where the job commands act: the running broker's API, or services.db.
type jobsBackend interface {
	create(id, doc string, things []string) (arn string, err error)
	list() ([]jobInfo, error)
	describe(id string) (*jobInfo, error)
	cancel(id string, force bool) error
}

// withJobs runs fn through the running broker's API when a broker serves the state directory, or on
// services.db (holding the serve lock) when none does.
func withJobs(g *globalFlags, endpoint string, fn func(jobsBackend) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	lock, lockErr := state.LockServe(cfg.StateDir)
	if lockErr != nil {
		b, err := newAPIJobs(cfg, endpoint)
		if err != nil {
			return fmt.Errorf("%w; and its AWS IoT API cannot be used: %v", lockErr, err)
		}
		return fn(b)
	}
	defer lock.Release()
	st, err := state.OpenState(cfg)
	if err != nil {
		return err
	}
	store, closeDB, err := broker.OpenServiceStore(cfg.StateDir, jobs.StoreBucket)
	if err != nil {
		return err
	}
	defer closeDB()
	o, err := jobs.OpenOffline(service.Deps{Config: cfg, State: st}, store)
	if err != nil {
		return err
	}
	return fn(offlineJobs{o})
}

// offlineJobs acts on services.db.
type offlineJobs struct{ o *jobs.Offline }

func (b offlineJobs) create(id, doc string, things []string) (string, error) {
	j, err := b.o.CreateJob(id, doc, things)
	if err != nil {
		return "", err
	}
	return b.o.JobARN(j.ID), nil
}

func (b offlineJobs) list() ([]jobInfo, error) {
	var out []jobInfo
	for _, j := range b.o.Jobs() {
		out = append(out, jobInfo{id: j.ID, status: string(j.Status), selection: j.TargetSelection, created: j.CreatedAt, things: j.Things})
	}
	return out, nil
}

func (b offlineJobs) describe(id string) (*jobInfo, error) {
	j, counts, execs, err := b.o.Describe(id)
	if err != nil {
		return nil, err
	}
	info := &jobInfo{id: j.ID, arn: b.o.JobARN(j.ID), status: string(j.Status), selection: j.TargetSelection, description: j.Description,
		created: j.CreatedAt, things: j.Things, counts: map[string]int{}}
	for s, n := range counts {
		info.counts[string(s)] = n
	}
	for _, x := range execs {
		info.execs = append(info.execs, execInfo{thing: x.Thing, status: string(x.Status), number: x.ExecutionNumber, updated: x.LastUpdatedAt})
	}
	return info, nil
}

func (b offlineJobs) cancel(id string, force bool) error {
	_, err := b.o.CancelJob(id, force)
	return err
}

func newJobID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "job-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// apiJobs acts through the running broker's AWS IoT API with the AWS SDK, as any API user does.
type apiJobs struct {
	c       *iot.Client
	region  string
	account string
}

// newAPIJobs is an iot client for the broker's API listener: the endpoint from --endpoint-url or
// controlPlane.listen (a wildcard host is reached on 127.0.0.1), the keys of <stateDir>/credentials and
// the core device CA as the only root.
func newAPIJobs(cfg *config.Config, endpoint string) (*apiJobs, error) {
	if endpoint == "" {
		if !cfg.ControlPlane.Enabled {
			return nil, errors.New("controlPlane.enabled is false")
		}
		host, port, err := net.SplitHostPort(cfg.ControlPlane.Listen)
		if err != nil {
			return nil, fmt.Errorf("controlPlane.listen %q: %w", cfg.ControlPlane.Listen, err)
		}
		if port == "0" {
			return nil, fmt.Errorf("controlPlane.listen %q has port 0: give the listener's address with --endpoint-url", cfg.ControlPlane.Listen)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		endpoint = "https://" + net.JoinHostPort(host, port)
	}
	st, err := state.OpenState(cfg)
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(context.Background(),
		awsconfig.WithSharedCredentialsFiles([]string{filepath.Join(cfg.StateDir, broker.CredentialsFile)}),
		awsconfig.WithSharedConfigFiles([]string{}),
		awsconfig.WithSharedConfigProfile("ggbroker"),
		awsconfig.WithRegion(cfg.Core.Region),
		awsconfig.WithCustomCABundle(bytes.NewReader(st.CoreCA.CertPEM())),
		awsconfig.WithRetryMaxAttempts(1),
	)
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	awsCfg.BaseEndpoint = aws.String(endpoint)
	return &apiJobs{c: iot.NewFromConfig(awsCfg), region: cfg.Core.Region, account: cfg.Core.AccountID}, nil
}

func (b *apiJobs) create(id, doc string, things []string) (string, error) {
	var targets []string
	for _, th := range things {
		targets = append(targets, "arn:aws:iot:"+b.region+":"+b.account+":thing/"+th)
	}
	out, err := b.c.CreateJob(context.Background(), &iot.CreateJobInput{JobId: aws.String(id), Document: aws.String(doc), Targets: targets})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.JobArn), nil
}

func (b *apiJobs) list() ([]jobInfo, error) {
	var out []jobInfo
	for p := iot.NewListJobsPaginator(b.c, &iot.ListJobsInput{}); p.HasMorePages(); {
		page, err := p.NextPage(context.Background())
		if err != nil {
			return nil, err
		}
		for _, s := range page.Jobs {
			j, err := b.describe(aws.ToString(s.JobId))
			if err != nil {
				return nil, err
			}
			out = append(out, *j)
		}
	}
	return out, nil
}

func (b *apiJobs) describe(id string) (*jobInfo, error) {
	ctx := context.Background()
	d, err := b.c.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(id)})
	if err != nil {
		return nil, err
	}
	j := d.Job
	info := &jobInfo{id: aws.ToString(j.JobId), arn: aws.ToString(j.JobArn), status: string(j.Status), selection: string(j.TargetSelection),
		description: aws.ToString(j.Description), created: aws.ToTime(j.CreatedAt), counts: map[string]int{}}
	for _, t := range j.Targets {
		info.things = append(info.things, t[strings.LastIndex(t, "/")+1:])
	}
	if p := j.JobProcessDetails; p != nil {
		for s, n := range map[jobs.ExecutionStatus]*int32{
			jobs.Queued: p.NumberOfQueuedThings, jobs.InProgress: p.NumberOfInProgressThings, jobs.Succeeded: p.NumberOfSucceededThings,
			jobs.Failed: p.NumberOfFailedThings, jobs.TimedOut: p.NumberOfTimedOutThings, jobs.Rejected: p.NumberOfRejectedThings,
			jobs.Removed: p.NumberOfRemovedThings, jobs.Canceled: p.NumberOfCanceledThings,
		} {
			info.counts[string(s)] = int(aws.ToInt32(n))
		}
	}
	for p := iot.NewListJobExecutionsForJobPaginator(b.c, &iot.ListJobExecutionsForJobInput{JobId: aws.String(id)}); p.HasMorePages(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, e := range page.ExecutionSummaries {
			t := aws.ToString(e.ThingArn)
			x := execInfo{thing: t[strings.LastIndex(t, "/")+1:]}
			if s := e.JobExecutionSummary; s != nil {
				x.status, x.number, x.updated = string(s.Status), aws.ToInt64(s.ExecutionNumber), aws.ToTime(s.LastUpdatedAt)
			}
			info.execs = append(info.execs, x)
		}
	}
	return info, nil
}

func (b *apiJobs) cancel(id string, force bool) error {
	_, err := b.c.CancelJob(context.Background(), &iot.CancelJobInput{JobId: aws.String(id), Force: force})
	return err
}
