package broker

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"go.etcd.io/bbolt"

	"github.com/ggbroker/ggbroker/broker/store"
	"github.com/ggbroker/ggbroker/internal/boltcommit"
	"github.com/ggbroker/ggbroker/service"
)

// serviceDBFile is the service database in the state directory: one bbolt bucket per service store
// (shadows, jobs, the bridge spool ...). It is apart from the MQTT persistence file, which is optional
// and mochi's layout, while a service's state is kept whether MQTT persistence is on or not.
const serviceDBFile = "services.db"

// openServiceDB opens the service database. The state directory lock is held, so the bbolt file lock
// cannot be taken by another broker; the timeout is a guard only.
func openServiceDB(stateDir string) (*bbolt.DB, error) {
	path := filepath.Join(stateDir, serviceDBFile)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: store.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("service database %s: %w", path, err)
	}
	return db, nil
}

// bucketStore is one bucket of the service database. Writes go through the group committer, so
// concurrent writers share one fsynced commit; each call returns once its write is durable.
type bucketStore struct {
	db   *bbolt.DB
	c    *boltcommit.Committer
	name []byte
}

func newBucketStore(db *bbolt.DB, c *boltcommit.Committer, name string) (*bucketStore, error) {
	if name == "" {
		return nil, errors.New("store bucket name is empty")
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(name))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("service database bucket %q: %w", name, err)
	}
	return &bucketStore{db: db, c: c, name: []byte(name)}, nil
}

func (s *bucketStore) Get(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(s.name).Get([]byte(key)); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	return out, err
}

func (s *bucketStore) Put(key string, value []byte) error {
	return s.Update(func(tx service.Tx) error { return tx.Put(key, value) })
}

func (s *bucketStore) Delete(key string) error {
	return s.Update(func(tx service.Tx) error { return tx.Delete(key) })
}

func (s *bucketStore) ForEach(prefix string, fn func(key string, value []byte) error) error {
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

// Update runs fn in a shared write transaction (boltcommit). fn may run more than once when another
// writer of the same commit fails, so it must not have side effects outside the Tx.
func (s *bucketStore) Update(fn func(tx service.Tx) error) error {
	return s.c.Update(func(tx *bbolt.Tx) error {
		return fn(bucketTx{tx.Bucket(s.name)})
	})
}

type bucketTx struct{ b *bbolt.Bucket }

func (t bucketTx) Get(key string) ([]byte, error) {
	if v := t.b.Get([]byte(key)); v != nil {
		return bytes.Clone(v), nil
	}
	return nil, nil
}

func (t bucketTx) Put(key string, value []byte) error { return t.b.Put([]byte(key), value) }
func (t bucketTx) Delete(key string) error            { return t.b.Delete([]byte(key)) }

// OpenServiceStore opens one bucket of the state directory's service database for a process that
// holds the state directory's serve lock and runs no broker: the CLI acting while no broker serves
// (`ggbroker shadow`, `ggbroker job`). close commits and releases the file.
func OpenServiceStore(stateDir, bucket string) (st service.Store, close func() error, err error) {
	db, err := openServiceDB(stateDir)
	if err != nil {
		return nil, nil, err
	}
	c := boltcommit.New(db)
	bs, err := newBucketStore(db, c, bucket)
	if err != nil {
		c.Close()
		db.Close()
		return nil, nil, err
	}
	return bs, func() error { c.Close(); return db.Close() }, nil
}
