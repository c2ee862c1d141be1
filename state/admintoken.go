package state

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ggbroker/ggbroker/certs"
)

// AdminTokenFile holds the bearer token the admin listener's state-changing endpoints (POST /rotate)
// require: the listener is loopback-only, but any local user can reach loopback; only the state
// directory's owner can read this 0600 file.
const AdminTokenFile = "admin.token"

// AdminToken returns the admin token, creating it (0600) on first use.
func (s *State) AdminToken() (string, error) {
	path := filepath.Join(s.Dir, AdminTokenFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(raw)); tok != "" {
			return tok, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("admin token %s: %w", path, err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(buf)
	if err := certs.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token %s: %w", path, err)
	}
	return tok, nil
}
