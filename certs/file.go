package certs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic replaces path with data so that a reader, or the next boot
// after a power cut, sees either the old content or the new, never a
// half-written key: it writes a temporary file in the same directory, fsyncs
// it, sets perm (exactly, whatever the umask), renames it over path and
// fsyncs the directory so the rename itself is durable. Edge boards lose
// power; certmagic's file storage does the same for the same reason.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// even for the moment before the Chmod below.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %q: create temporary file: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %q: set mode %v: %w", path, perm, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %q: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %q: close: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %q: rename into place: %w", path, err)
	}
	if err = syncDir(dir); err != nil {
		// The file is in place; only its durability across a power cut is
		// unknown. Report it all the same: the caller asked for durability.
		return fmt.Errorf("write %q: fsync directory: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so a rename in it survives a power cut. Some
// file systems (and platforms) cannot fsync a directory and say EINVAL;
// there is nothing better to do there, so that is not an error.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}
