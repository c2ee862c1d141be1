package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.etcd.io/bbolt"

	"github.com/ggbroker/ggbroker/service"
	"github.com/ggbroker/ggbroker/shadow"
	"github.com/ggbroker/ggbroker/state"
)

// serviceDBFile is the broker's service database in the state directory (broker/servicedb.go).
const serviceDBFile = "services.db"

func newShadowCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shadow",
		Short: "Read and change Device Shadows (classic and named) in the state directory",
		Long: `Device Shadows live in the state directory's service database (services.db), as a running broker
keeps them. These commands print and take shadow documents exactly as the AWS IoT Device Shadow service
does (GetThingShadow, UpdateThingShadow, DeleteThingShadow, ListNamedShadowsForThing).

They open the database directly, so they work only while no broker serves the state directory (its
serve lock is taken for the duration of the command). While a broker runs, use the iot-data HTTPS API
(aws iot-data get-thing-shadow ...) or the MQTT topics $aws/things/THING/shadow/... instead; an update
made here publishes no update/delta, since no broker runs to publish it.`,
	}
	var name string
	withName := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&name, "name", "", "named shadow (default: the classic, unnamed shadow)")
		return c
	}
	cmd.AddCommand(withName(&cobra.Command{
		Use:   "get THING",
		Short: "Print a shadow document (state with delta, metadata, version)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withShadows(g, func(s *shadow.Shadows) error {
				id := shadow.ID{Thing: args[0], Name: name}
				if e := id.Validate(); e != nil {
					return shadowError("get", e, nil)
				}
				d, e, err := s.Get(id)
				if e != nil {
					return shadowError("get", e, err)
				}
				return printJSON(c.OutOrStdout(), shadow.GetResponse(d, s.Now(), "", false))
			})
		},
	}))
	var document string
	update := withName(&cobra.Command{
		Use:   "update THING",
		Short: "Update a shadow with a request document ({\"state\":{\"desired\":{...}}}) from --document or stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			raw, err := readDocument(c.InOrStdin(), document)
			if err != nil {
				return err
			}
			return withShadows(g, func(s *shadow.Shadows) error {
				id := shadow.ID{Thing: args[0], Name: name}
				if e := id.Validate(); e != nil {
					return shadowError("update", e, nil)
				}
				req, e := shadow.ParseUpdate(raw)
				if e != nil {
					return shadowError("update", e, nil)
				}
				u, e, err := s.Update(id, req, nil)
				if e != nil {
					return shadowError("update", e, err)
				}
				return printJSON(c.OutOrStdout(), u.Accepted)
			})
		},
	})
	update.Flags().StringVar(&document, "document", "-", "file holding the update request document; - reads stdin")
	cmd.AddCommand(update)
	cmd.AddCommand(withName(&cobra.Command{
		Use:   "delete THING",
		Short: "Delete a shadow (its version carries on if it is created again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withShadows(g, func(s *shadow.Shadows) error {
				id := shadow.ID{Thing: args[0], Name: name}
				if e := id.Validate(); e != nil {
					return shadowError("delete", e, nil)
				}
				v, e, err := s.Delete(id, nil)
				if e != nil {
					return shadowError("delete", e, err)
				}
				return printJSON(c.OutOrStdout(), shadow.DeleteResponse(v, s.Now(), "", false))
			})
		},
	}))
	cmd.AddCommand(&cobra.Command{
		Use:   "list THING",
		Short: "List a thing's named shadows",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withShadows(g, func(s *shadow.Shadows) error {
				if e := (shadow.ID{Thing: args[0]}).Validate(); e != nil {
					return shadowError("list", e, nil)
				}
				names, _, err := s.ListNamed(args[0], "", 0)
				if err != nil {
					return err
				}
				for _, n := range names {
					fmt.Fprintln(c.OutOrStdout(), n)
				}
				return nil
			})
		},
	})
	return cmd
}

// withShadows runs fn on the state directory's shadows, holding the serve lock so that no broker
// starts meanwhile, and refusing while one runs.
func withShadows(g *globalFlags, fn func(*shadow.Shadows) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	scfg, err := shadow.DecodeConfig(cfg)
	if err != nil {
		return err
	}
	lock, err := state.LockServe(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("%w\n(the shadow commands open services.db directly; while a broker runs, use the iot-data HTTPS API or MQTT)", err)
	}
	defer lock.Release()
	path := filepath.Join(cfg.StateDir, serviceDBFile)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return fmt.Errorf("service database %s: %w", path, err)
	}
	defer db.Close()
	st, err := openBucket(db, shadow.Bucket)
	if err != nil {
		return fmt.Errorf("service database %s: %w", path, err)
	}
	return fn(shadow.NewShadows(st, shadow.Limits{DocumentSize: scfg.DocumentSizeLimitBytes}, nil))
}

// shadowError is a refusal as the command reports it: AWS' code and message, and the cause of a 500.
func shadowError(op string, e *shadow.Error, cause error) error {
	if cause != nil {
		return fmt.Errorf("shadow %s: %d %s: %w", op, e.Code, e.Message, cause)
	}
	return fmt.Errorf("shadow %s: %d %s", op, e.Code, e.Message)
}

func readDocument(stdin io.Reader, path string) ([]byte, error) {
	if path == "" || path == "-" {
		raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("read the update document from stdin: %w", err)
		}
		return raw, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--document: %w", err)
	}
	return raw, nil
}

// printJSON prints a shadow document indented, for a person at a terminal.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// boltBucket is one bucket of services.db for the CLI: plain bbolt transactions, each write fsynced
// (the broker's own store shares commits between writers; one command has one writer).
type boltBucket struct {
	db   *bbolt.DB
	name []byte
}

func openBucket(db *bbolt.DB, name string) (*boltBucket, error) {
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(name))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &boltBucket{db: db, name: []byte(name)}, nil
}

func (b *boltBucket) Get(key string) ([]byte, error) {
	var out []byte
	err := b.db.View(func(tx *bbolt.Tx) error {
		out = bytes.Clone(tx.Bucket(b.name).Get([]byte(key)))
		return nil
	})
	return out, err
}

func (b *boltBucket) Put(key string, value []byte) error {
	return b.Update(func(tx service.Tx) error { return tx.Put(key, value) })
}

func (b *boltBucket) Delete(key string) error {
	return b.Update(func(tx service.Tx) error { return tx.Delete(key) })
}

func (b *boltBucket) ForEach(prefix string, fn func(string, []byte) error) error {
	return b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(b.name).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			if err := fn(string(k), bytes.Clone(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *boltBucket) Update(fn func(service.Tx) error) error {
	return b.db.Update(func(tx *bbolt.Tx) error { return fn(boltTx{tx.Bucket(b.name)}) })
}

type boltTx struct{ b *bbolt.Bucket }

func (t boltTx) Get(key string) ([]byte, error)     { return bytes.Clone(t.b.Get([]byte(key))), nil }
func (t boltTx) Put(key string, value []byte) error { return t.b.Put([]byte(key), value) }
func (t boltTx) Delete(key string) error            { return t.b.Delete([]byte(key)) }
