// Package certs holds the certificate authority and the certificates of a
// ggbroker core device: the core device CA that client devices trust (either
// made here and kept on disk, or brought by the operator the way Greengrass'
// client device auth component names it), the broker's TLS server certificate
// and its rotation, and the PEM and file helpers they need.
//
// It mirrors what AWS IoT Greengrass V2 does for its local MQTT broker
// (aws.greengrass.clientdevices.Auth): the core device CA signs a short-lived
// server certificate (7 days by default, serverCertificateValiditySeconds)
// that is rotated before it expires and whenever the core device's
// connectivity information (the SANs) or the CA changes. See
// https://docs.aws.amazon.com/greengrass/v2/developerguide/client-device-auth-component.html
//
// The package imports nothing else of the project, holds no global state and
// only uses the standard library.
package certs
