// Package configs holds ggbroker's example configurations. The full one, ggbroker.yaml, is also the
// embedded default configuration, so the documented defaults and the real ones cannot drift apart.
package configs

import _ "embed"

// Default is ggbroker.yaml: every configuration key with its default value.
//
//go:embed ggbroker.yaml
var Default []byte
