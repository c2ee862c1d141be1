package bridge

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// failureKind is a connect failure's class, the reason label of ggbroker_bridge_connect_failures_total.
func failureKind(err error) string {
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var ref *refusal
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		return "dns"
	case errors.As(err, &unknownCA), errors.As(err, &host), errors.As(err, &invalid):
		return "server-certificate"
	case errors.As(err, &op) && op.Op == "remote error":
		return "client-certificate"
	case errors.As(err, &ref) && ref.notAuthorized():
		return "not-authorized"
	case errors.As(err, &ref):
		return "connack"
	case errors.Is(err, errNoConnack):
		return "no-connack"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection-refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "network"
}

// describe says why a connection to the upstream failed or ended, in words an operator can act on;
// the error itself goes into the record's details.
func describe(err error) string {
	if err == nil {
		return "closed"
	}
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var ref *refusal
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		return fmt.Sprintf("DNS: cannot resolve %s (check core.iotDataEndpoint and the gateway's DNS)", dns.Name)
	case errors.As(err, &unknownCA):
		return "wrong CA: the upstream's server certificate is not signed by a CA in core.rootCaPath"
	case errors.As(err, &host):
		return fmt.Sprintf("the upstream's server certificate is not valid for %s", host.Host)
	case errors.As(err, &invalid):
		return "the upstream's server certificate is invalid: " + invalid.Error()
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the upstream: it did not accept the core device's certificate (not
		// registered, inactive, revoked, or signed by a CA it does not trust).
		return fmt.Sprintf("bad certificate: the upstream rejected the client certificate in core.certificateFilePath (%v)", op.Err)
	case errors.As(err, &ref) && ref.notAuthorized():
		return ref.Error() + fmt.Sprintf(": is the certificate in core.certificateFilePath registered and active upstream, with a policy that allows iot:Connect for client ID %q (core.thingName)?", ref.clientID)
	case errors.As(err, &ref):
		return ref.Error()
	case errors.Is(err, errNoConnack):
		return errNoConnack.Error() + " (AWS IoT Core does this when no policy of the certificate allows iot:Connect for the client ID core.thingName)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens at core.iotDataEndpoint"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout: the upstream did not answer in time"
	case errors.Is(err, context.Canceled):
		return "stopping"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the upstream closed the connection"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	return err.Error()
}
