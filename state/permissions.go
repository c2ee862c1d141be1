package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// checkPermissions refuses a state directory, or a directory or file in it that ggbroker trusts, that
// users other than its owner may write: such a user could swap registry.json or a policy and connect
// as whatever device he likes, or replace a CA key. ggbroker creates everything 0700/0600/0644; a
// group- or world-writable entry was made or changed by someone else, so it is named, with the fix.
func checkPermissions(dir string) error {
	check := func(path string) error {
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		if fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s is writable by users other than its owner (mode %04o): another user could change who may connect; refusing to use it (fix: chmod go-w %s)",
				path, fi.Mode().Perm(), path)
		}
		return nil
	}
	if err := check(dir); err != nil {
		return err
	}
	for _, sub := range []string{"", coreCADir, serverDir, "policies"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue // missing: created by us, 0700
		}
		for _, e := range entries {
			if err := check(filepath.Join(dir, sub, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
