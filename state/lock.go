package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Lock files in the state directory. Two locks, because the CLI and a running broker legitimately share
// a state directory (`ggbroker device create` while `serve` runs), but two brokers must not, and nothing
// may use a state directory while another process is still creating its CAs.
const (
	// serveLockFile is held exclusively by `serve` for as long as it runs: a second `serve` on the same
	// directory is refused at once, whether persistence is on or off.
	serveLockFile = "serve.lock"
	// initLockFile is held exclusively while a process opens the state (creating the CAs, the registry
	// and the default policy on first use), so that two processes never create two different CAs.
	initLockFile = "init.lock"
)

// initLockWait is how long OpenState waits for another process to finish opening the same state.
const initLockWait = 5 * time.Second

// ServeLock is the running broker's hold on its state directory. Release lets it go; the kernel also
// lets go when the process dies, so a kill -9 never leaves a stale lock behind.
type ServeLock struct{ f *os.File }

// LockServe takes the state directory for one running broker. It fails at once, naming the directory
// and the process holding it, when another broker runs on it.
func LockServe(dir string) (*ServeLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, serveLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another ggbroker serve%s: stop it, or give this one its own --state-dir", dir, holder)
		}
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &ServeLock{f: f}, nil
}

// Release lets the state directory go. It is safe to call more than once, and on a nil lock.
func (l *ServeLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}

// readPID names the process that wrote its PID into a lock file, for the refusal message.
func readPID(f *os.File) string {
	buf := make([]byte, 16)
	n, _ := f.ReadAt(buf, 0)
	if pid := strings.TrimSpace(string(buf[:n])); pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}

// lockInit takes the state directory's init lock, waiting up to initLockWait for another process that
// is opening the same state, and returns the function that releases it.
func lockInit(dir string) (func(), error) {
	path := filepath.Join(dir, initLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	deadline := time.Now().Add(initLockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("state directory lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("state directory %s is being set up by another ggbroker process (it holds %s for more than %s): let it finish, then try again", dir, path, initLockWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
