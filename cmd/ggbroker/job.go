package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/bbolt"

	"github.com/ggbroker/ggbroker/jobs"
	"github.com/ggbroker/ggbroker/service"
	"github.com/ggbroker/ggbroker/state"
)

// jobsDirectNote is what every job command's help says about where it acts.
const jobsDirectNote = `These commands work on the state directory's services.db directly, and only while no broker serves
that state directory (they take its serve lock, so a broker cannot start meanwhile). While a broker runs,
use its AWS IoT API instead (aws iot create-job / describe-job / list-jobs / cancel-job, or an SDK, against
the broker's controlPlane listener): the broker owns services.db and tells connected devices at once.
Devices learn of jobs created here with get or start-next when they connect.`

func newJobCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Create, list, describe and cancel AWS IoT Jobs for client devices",
		Long: `Manage the AWS IoT Jobs the broker serves to devices on $aws/things/THING/jobs/... (see jobs/README.md).

` + jobsDirectNote,
	}
	cmd.AddCommand(newJobCreateCommand(g), newJobListCommand(g), newJobDescribeCommand(g), newJobCancelCommand(g))
	return cmd
}

func newJobCreateCommand(g *globalFlags) *cobra.Command {
	var things []string
	var docFile, jobID string
	cmd := &cobra.Command{
		Use:   "create --thing T [--thing T2] --document FILE [--job-id ID]",
		Short: "Create a SNAPSHOT job with a JSON document for one or more things",
		Long: `Create a job: one QUEUED execution per thing, each thing's devices get it with get, start-next or
$next/get. The document is a JSON object of at most 32768 characters; S3 presigned-URL placeholders are
refused (no S3 offline). Without --job-id, an ID like job-20261201-100000-1a2b3c is made.

` + jobsDirectNote,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(things) == 0 {
				return errors.New("--thing is required (repeat it for several things)")
			}
			if docFile == "" {
				return errors.New("--document FILE is required (- reads standard input)")
			}
			doc, err := readDocument(docFile, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if jobID == "" {
				jobID = newJobID()
			}
			return withOfflineJobs(g, func(o *jobs.Offline) error {
				job, err := o.CreateJob(jobID, doc, things)
				if err != nil {
					return fmt.Errorf("create job %s: %w", jobID, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created job %s (%s) for %s\n", job.ID, o.JobARN(job.ID), strings.Join(job.Things, ", "))
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&things, "thing", nil, "target thing name (repeatable)")
	cmd.Flags().StringVar(&docFile, "document", "", "job document file (JSON object; - for standard input)")
	cmd.Flags().StringVar(&jobID, "job-id", "", "job ID: 1-64 characters of [a-zA-Z0-9_-] (default: generated)")
	return cmd
}

func newJobListCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the jobs with their status and targets",
		Long:  "List every job, oldest first.\n\n" + jobsDirectNote,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOfflineJobs(g, func(o *jobs.Offline) error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "JOB ID\tSTATUS\tSELECTION\tCREATED\tTHINGS")
				for _, j := range o.Jobs() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", j.ID, j.Status, j.TargetSelection, j.CreatedAt.UTC().Format(time.RFC3339), strings.Join(j.Things, ","))
				}
				return w.Flush()
			})
		},
	}
}

func newJobDescribeCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "describe ID",
		Short: "Show a job (as DescribeJob answers) and its executions",
		Long:  "Show a job as the DescribeJob API answers it, then one line per execution.\n\n" + jobsDirectNote,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOfflineJobs(g, func(o *jobs.Offline) error {
				job, execs, err := o.Describe(args[0])
				if err != nil {
					return err
				}
				raw, err := json.MarshalIndent(job, "", "  ")
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintln(out, string(raw))
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "THING\tEXECUTION\tSTATUS\tVERSION\tLAST UPDATED")
				for _, x := range execs {
					fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\n", x.Thing, x.ExecutionNumber, x.Status, x.VersionNumber, x.LastUpdatedAt.UTC().Format(time.RFC3339))
				}
				return w.Flush()
			})
		},
	}
}

func newJobCancelCommand(g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job: its QUEUED executions (with --force, its IN_PROGRESS ones too)",
		Long:  "Cancel a job, as CancelJob does.\n\n" + jobsDirectNote,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOfflineJobs(g, func(o *jobs.Offline) error {
				if _, err := o.CancelJob(args[0], force); err != nil {
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

func readDocument(path string, stdin io.Reader) (string, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("--document %s: %w", path, err)
	}
	return string(bytes.TrimSpace(raw)), nil
}

func newJobID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "job-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// withOfflineJobs runs fn on the jobs in services.db, holding the state directory's serve lock so that
// no broker serves it meanwhile.
func withOfflineJobs(g *globalFlags, fn func(*jobs.Offline) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	lock, err := state.LockServe(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("%w\n(a broker serves this state directory: manage its jobs through its AWS IoT API, e.g. aws iot create-job)", err)
	}
	defer lock.Release()
	st, err := state.OpenState(cfg)
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.StateDir, "services.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("service database %s: %w", path, err)
	}
	defer db.Close()
	store, err := newBoltStore(db, jobs.StoreBucket)
	if err != nil {
		return err
	}
	o, err := jobs.OpenOffline(service.Deps{Config: cfg, State: st}, store)
	if err != nil {
		return err
	}
	return fn(o)
}

// boltStore is a service.Store on one bucket of services.db for the CLI: one writer (the serve lock is
// held), every write its own fsynced transaction.
type boltStore struct {
	db   *bbolt.DB
	name []byte
}

func newBoltStore(db *bbolt.DB, bucket string) (*boltStore, error) {
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucket))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("service database bucket %q: %w", bucket, err)
	}
	return &boltStore{db: db, name: []byte(bucket)}, nil
}

func (s *boltStore) Get(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		out = bytes.Clone(tx.Bucket(s.name).Get([]byte(key)))
		return nil
	})
	return out, err
}

func (s *boltStore) Put(key string, v []byte) error {
	return s.Update(func(tx service.Tx) error { return tx.Put(key, v) })
}

func (s *boltStore) Delete(key string) error {
	return s.Update(func(tx service.Tx) error { return tx.Delete(key) })
}

func (s *boltStore) ForEach(prefix string, fn func(string, []byte) error) error {
	return s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(s.name).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if err := fn(string(k), bytes.Clone(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) Update(fn func(service.Tx) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error { return fn(boltTx{tx.Bucket(s.name)}) })
}

type boltTx struct{ b *bbolt.Bucket }

func (t boltTx) Get(key string) ([]byte, error)     { return bytes.Clone(t.b.Get([]byte(key))), nil }
func (t boltTx) Put(key string, value []byte) error { return t.b.Put([]byte(key), value) }
func (t boltTx) Delete(key string) error            { return t.b.Delete([]byte(key)) }
