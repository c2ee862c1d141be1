package boltcommit

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// TestConcurrentWritersShareCommitsAndFailAlone: every successful writer's change is stored, one
// writer's failure does not fail the others, and writes after Close are refused.
func TestConcurrentWritersShareCommitsAndFailAlone(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	c := New(db)
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Go(func() {
			errs[i] = c.Update(func(tx *bbolt.Tx) error {
				if i%10 == 3 {
					return boom
				}
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%03d", i), []byte("v"))
			})
		})
	}
	wg.Wait()
	c.Close()
	for i, err := range errs {
		if want := i%10 == 3; want != errors.Is(err, boom) || !want && err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	_ = db.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket([]byte("b")).Stats().KeyN; n != 180 {
			t.Errorf("%d keys stored, want 180", n)
		}
		return nil
	})
	if err := c.Update(func(*bbolt.Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}
