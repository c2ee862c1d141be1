package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/config"
)

// TestServeLockRefusesASecondBroker: one serve per state directory, refused at once with a message
// that names the directory, and free again once released.
func TestServeLockRefusesASecondBroker(t *testing.T) {
	dir := t.TempDir()
	l, err := LockServe(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockServe(dir); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "in use by another ggbroker serve") {
		t.Fatalf("second lock: %v", err)
	}
	l.Release()
	l.Release() // twice is fine
	l2, err := LockServe(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
}

// TestOpenStateWaitsForAnotherOpener: while another process sets the state up (creating the CAs),
// OpenState waits for it instead of making a second CA.
func TestOpenStateWaitsForAnotherOpener(t *testing.T) {
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	unlock, err := lockInit(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := OpenState(cfg); done <- err }()
	time.Sleep(200 * time.Millisecond) // the other "process" is busy for a while
	select {
	case err := <-done:
		t.Fatalf("OpenState did not wait for the init lock (returned %v)", err)
	default:
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("OpenState returned before the lock was released")
	}
}

// TestWritableByOthersIsRefused (issue 17): a state directory, or a file in it, that other users may
// write is refused, naming it; fixed, it opens.
func TestWritableByOthersIsRefused(t *testing.T) {
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	if _, err := OpenState(cfg); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, registryFile), filepath.Join(cfg.StateDir, coreCADir, coreCAKeyFile)} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, fi.Mode().Perm()|0o002); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenState(cfg); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod go-w") {
			t.Fatalf("%s world-writable: %v", path, err)
		}
		if err := os.Chmod(path, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenState(cfg); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
}
