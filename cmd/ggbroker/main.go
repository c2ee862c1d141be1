// Command ggbroker makes a Linux box act, for MQTT client devices, like an AWS IoT Greengrass V2 core
// device: a local MQTT broker with mutual TLS, a local CA and a registry of things. Run
// `ggbroker --help` for the commands.
package main

import (
	"errors"
	"fmt"
	"os"
)

// Set by the build: go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

// exitError carries a specific exit status (for example `policy check`'s 1 on deny).
type exitError struct {
	code int
	err  error
	// logged: the error is in the log already (serve's fatal start errors), so main does not print it
	// a second time.
	logged bool
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	err := newRootCommand().Execute()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.logged {
			os.Exit(code)
		}
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "ggbroker:", msg)
	}
	os.Exit(code)
}
