package awsapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ggbroker/ggbroker/certs"
)

// Profile is the profile of the credentials file ggbroker writes.
const Profile = "ggbroker"

// Credentials are the one access key the API listener accepts (the account's).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
}

// LoadOrCreateCredentials returns the credentials of the shared-credentials file at path (profile
// [ggbroker]). With fixed keys (controlPlane.accessKeyId and secretAccessKey) those are used and the
// file is (re)written with them; otherwise an existing file is read, and a missing one is created
// with random keys, 0600, so that AWS_SHARED_CREDENTIALS_FILE=<path> AWS_PROFILE=ggbroker works for
// the AWS CLI and every SDK. created says whether the file was written.
func LoadOrCreateCredentials(path string, fixed Credentials) (c Credentials, created bool, err error) {
	if fixed.AccessKeyID != "" || fixed.SecretAccessKey != "" {
		if fixed.AccessKeyID == "" || fixed.SecretAccessKey == "" {
			return c, false, errors.New("controlPlane.accessKeyId and controlPlane.secretAccessKey go together: set both or neither")
		}
		if old, err := ReadCredentials(path); err == nil && old == fixed {
			return fixed, false, nil
		}
		return fixed, true, writeCredentials(path, fixed)
	}
	c, err = ReadCredentials(path)
	if err == nil {
		return c, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return c, false, err
	}
	if c, err = randomCredentials(); err != nil {
		return c, false, err
	}
	return c, true, writeCredentials(path, c)
}

// ReadCredentials reads profile [ggbroker] of a shared-credentials file.
func ReadCredentials(path string) (Credentials, error) {
	var c Credentials
	raw, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("credentials file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	in := false
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			in = strings.TrimSpace(strings.Trim(l, "[]")) == Profile
		case in:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return c, fmt.Errorf("credentials file %s line %d: want key = value", path, line)
			}
			switch strings.TrimSpace(k) {
			case "aws_access_key_id":
				c.AccessKeyID = strings.TrimSpace(v)
			case "aws_secret_access_key":
				c.SecretAccessKey = strings.TrimSpace(v)
			}
		}
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, fmt.Errorf("credentials file %s: profile [%s] needs aws_access_key_id and aws_secret_access_key (delete the file to get new keys)", path, Profile)
	}
	return c, nil
}

func writeCredentials(path string, c Credentials) error {
	body := fmt.Sprintf("# Written by ggbroker: the keys its AWS API listener (controlPlane.listen) accepts.\n"+
		"# AWS_SHARED_CREDENTIALS_FILE=%s AWS_PROFILE=%s aws --endpoint-url https://... iot list-things\n"+
		"[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", path, Profile, Profile, c.AccessKeyID, c.SecretAccessKey)
	if err := certs.WriteFileAtomic(path, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write credentials file: %w", err)
	}
	return nil
}

// randomCredentials makes keys of AWS' shapes: AKIA + 16 of A-Z2-7, and 40 characters of base64.
func randomCredentials() (Credentials, error) {
	const upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	pick := func(alphabet string, n int) (string, error) {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("random key: %w", err)
		}
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		return string(b), nil
	}
	id, err := pick(upper, 16)
	if err != nil {
		return Credentials{}, err
	}
	secret, err := pick(b64, 40)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{AccessKeyID: "AKIA" + id, SecretAccessKey: secret}, nil
}
