package test

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
)

// readmeSection returns the shell commands of the fenced code blocks in the README section whose
// heading starts with heading ("## Quick start"), in order, each split into words as a shell would
// split it: continuation lines joined, single and double quotes removed, comments dropped.
func readmeSection(t *testing.T, heading string) [][]string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	in, block := false, false
	var line strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		text := sc.Text()
		switch {
		case strings.HasPrefix(text, "## "):
			if in {
				return cmds
			}
			in = strings.HasPrefix(text, heading)
			continue
		case !in:
			continue
		case strings.HasPrefix(text, "```"):
			block = !block
			continue
		case !block:
			continue
		}
		if c, ok := strings.CutSuffix(text, "\\"); ok {
			line.WriteString(c + " ")
			continue
		}
		line.WriteString(text)
		if words := shellWords(t, line.String()); len(words) > 0 {
			cmds = append(cmds, words)
		}
		line.Reset()
	}
	if !in {
		t.Fatalf("README.md has no section %q", heading)
	}
	return cmds
}

// shellWords splits a command line the way sh does for the README's commands: blanks separate words,
// quotes group and are removed, # starts a comment.
func shellWords(t *testing.T, s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			return words
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in README command %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// flagValue is the value after flag in a command's words, "" if absent.
func flagValue(words []string, flag string) string {
	for i := 0; i+1 < len(words); i++ {
		if words[i] == flag {
			return words[i+1]
		}
	}
	return ""
}

// dockerIgnored reports whether the build context leaves path out, by .dockerignore's rules as Docker
// applies them (patterns relative to the context root, ** for any number of directories, a directory
// excluding everything in it; the module this project does not import is replaced by a small matcher,
// enough for the patterns in the file; a "!" pattern re-includes what it matches, and the last
// matching pattern decides, as in Docker).
func dockerIgnored(patterns []string, path string) bool {
	parts := strings.Split(path, "/")
	ignored := false
	for _, p := range patterns {
		include := strings.HasPrefix(p, "!")
		re := dockerPattern(strings.TrimPrefix(p, "!"))
		for i := 1; i <= len(parts); i++ {
			if re.MatchString(strings.Join(parts[:i], "/")) {
				ignored = !include
				break
			}
		}
	}
	return ignored
}

func dockerPattern(p string) *regexp.Regexp {
	p = strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/")
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case p[i] == '*':
			b.WriteString("[^/]*")
		case p[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// TestDockerignoreKeepsSecretsOut: the docker build context never holds a state directory, a device's
// key or a build output, and still holds every source file the image is built from (issue 18: there was
// no .dockerignore, so `docker build` sent ./ggbroker-data and ./devices, keys included, to the daemon).
func TestDockerignoreKeepsSecretsOut(t *testing.T) {
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, p := range []string{
		"ggbroker-data/ca/core-ca.key", "ggbroker-data/ca/device-ca.key", "ggbroker-data/registry.json",
		"ggbroker-data/sessions.db", "other-state/ca/core-ca.key", "other-state/registry.json", "other-state/server/server.key",
		"devices/sensor-1/private.pem.key", "devices/sensor-1/device.pem.crt", "test/devices/x/private.pem.key",
		"ggbroker", "cmd/ggbroker/ggbroker.test", ".git/config", ".git/objects/ab/cdef",
		"examples/node/node_modules/mqtt/package.json", "examples/device-sdk-js/node_modules/aws-crt/dist/bin/linux-x64-glibc/aws-crt-nodejs.node",
	} {
		if !dockerIgnored(patterns, p) {
			t.Errorf("%s is in the docker build context", p)
		}
	}
	for _, p := range []string{
		"go.mod", "go.sum", "Dockerfile", "cmd/ggbroker/main.go", "configs/ggbroker.yaml", "configs/embed.go",
		"third_party/mochi-server/server.go", "third_party/mochi-server/go.mod", "broker/listener.go", "bridge/defaults.yaml",
		"certs/authority.go", "state/state.go", ".git/HEAD", ".git/refs/heads/main", // the commit the image names
	} {
		if dockerIgnored(patterns, p) {
			t.Errorf("%s, which the image is built from, is left out of the build context", p)
		}
	}
}
