package auth

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// Refusal reasons, as they appear in the `reason` field of log records.
const (
	ReasonNoCertificate        = "NO_CLIENT_CERTIFICATE"
	ReasonCertificateExpired   = "CERTIFICATE_EXPIRED"
	ReasonCertificateNotYet    = "CERTIFICATE_NOT_YET_VALID"
	ReasonUntrustedCertificate = "UNTRUSTED_CERTIFICATE"
	ReasonNotRegistered        = "CERTIFICATE_NOT_REGISTERED"
	ReasonRevoked              = "CERTIFICATE_REVOKED"
	ReasonInactive             = "CERTIFICATE_INACTIVE"
	ReasonClientIDNotThing     = "CLIENT_ID_NOT_ATTACHED_THING"
	ReasonRegistryUnavailable  = "REGISTRY_UNAVAILABLE"
)

// Refusal is why a client was not accepted. BadCredentials separates a certificate that is not a valid
// credential here (unknown, untrusted, expired: MQTT 5 reason 0x86) from a known credential that may
// not be used this way (revoked, inactive, wrong client ID: 0x87).
type Refusal struct {
	Reason         string
	Details        string
	BadCredentials bool
}

func (r *Refusal) Error() string { return r.Details }

// Identity is an authenticated client device: the certificate it presented and the thing it is.
// Thing is nil when the client ID is not the name of a thing the certificate is attached to, which
// only an Authenticator made with ThingOptional accepts (AWS IoT Core: a fleet provisioning claim
// certificate belongs to no thing).
type Identity struct {
	ClientID      string
	CertificateID string
	Certificate   *x509.Certificate
	Record        *Certificate
	Thing         *Thing
}

// ThingName is the identity's thing name, "" when it acts as no thing.
func (id *Identity) ThingName() string {
	if id == nil || id.Thing == nil {
		return ""
	}
	return id.Thing.Name
}

// Authenticator checks client certificates against the registry and the trusted device CAs. It asks the
// registry on every call, so a status change applies from the next connect on.
type Authenticator struct {
	registry      *Registry
	trusted       *x509.CertPool
	now           func() time.Time
	thingOptional bool
}

// Option changes how an Authenticator decides.
type Option func(*Authenticator)

// ThingOptional is AWS IoT Core's rule instead of Greengrass': the client ID need not name a thing
// the certificate is attached to, because iot:Connect decides which client IDs a certificate may use;
// only the thing policy variables need it ("the value of clientId in the MQTT connect message ... must
// exactly match the thing name", aws-iot-core/thing-policy-variables.md). The identity then has no
// Thing.
func ThingOptional() Option { return func(a *Authenticator) { a.thingOptional = true } }

// NewAuthenticator returns an Authenticator. trusted holds the device CAs whose certificates are
// accepted once registered; now is the clock (nil: time.Now). Without options it applies Greengrass'
// rule that the client ID is the name of a thing the certificate is attached to.
func NewAuthenticator(reg *Registry, trusted *x509.CertPool, now func() time.Time, opts ...Option) *Authenticator {
	if now == nil {
		now = time.Now
	}
	if trusted == nil {
		trusted = x509.NewCertPool()
	}
	a := &Authenticator{registry: reg, trusted: trusted, now: now}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Certificate checks the presented chain on its own, without a client ID: the leaf must be within its
// validity period, registered (or at least issued by a trusted device CA, to say so precisely) and
// ACTIVE. This is what a listener that has no client ID (discovery over HTTPS) checks.
func (a *Authenticator) Certificate(chain []*x509.Certificate) (*Certificate, error) {
	if len(chain) == 0 {
		return nil, &Refusal{Reason: ReasonNoCertificate, Details: "the client presented no certificate", BadCredentials: true}
	}
	leaf := chain[0]
	id := certs.Fingerprint(leaf)
	now := a.now()
	if now.After(leaf.NotAfter) {
		return nil, &Refusal{Reason: ReasonCertificateExpired, BadCredentials: true,
			Details: fmt.Sprintf("certificate %s expired at %s", short(id), leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	if now.Before(leaf.NotBefore) {
		return nil, &Refusal{Reason: ReasonCertificateNotYet, BadCredentials: true,
			Details: fmt.Sprintf("certificate %s is not valid before %s (check the device's clock)", short(id), leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	rec, err := a.registry.CertificateRecord(id)
	if err != nil {
		return nil, &Refusal{Reason: ReasonRegistryUnavailable, Details: err.Error()}
	}
	if rec == nil {
		if a.issuedByTrustedCA(chain, now) {
			return nil, &Refusal{Reason: ReasonNotRegistered, BadCredentials: true,
				Details: fmt.Sprintf("certificate %s (subject %q) is issued by a trusted device CA but not registered: register it with `ggbroker device register`", short(id), leaf.Subject.String())}
		}
		return nil, &Refusal{Reason: ReasonUntrustedCertificate, BadCredentials: true,
			Details: fmt.Sprintf("certificate %s (subject %q, issuer %q) is neither registered nor issued by a trusted device CA", short(id), leaf.Subject.String(), leaf.Issuer.String())}
	}
	switch rec.Status {
	case StatusActive:
		return rec, nil
	case StatusRevoked:
		return nil, &Refusal{Reason: ReasonRevoked, Details: fmt.Sprintf("certificate %s is REVOKED", short(id))}
	default:
		return nil, &Refusal{Reason: ReasonInactive, Details: fmt.Sprintf("certificate %s is %s, not ACTIVE", short(id), rec.Status)}
	}
}

// Authenticate checks the chain as Certificate does, then Greengrass' rule that the MQTT client ID is
// the name of a thing the certificate is attached to (greengrass-v2/device-auth.md). With
// ThingOptional another client ID is accepted too, as an identity with no Thing, and iot:Connect
// decides.
func (a *Authenticator) Authenticate(chain []*x509.Certificate, clientID string) (*Identity, error) {
	rec, err := a.Certificate(chain)
	if err != nil {
		return nil, err
	}
	thing, ok, err := a.registry.Thing(clientID)
	if err != nil {
		return nil, &Refusal{Reason: ReasonRegistryUnavailable, Details: err.Error()}
	}
	id := &Identity{ClientID: clientID, CertificateID: rec.ID, Certificate: chain[0], Record: rec}
	if ok && rec.AttachedTo(clientID) {
		id.Thing = thing
		return id, nil
	}
	if a.thingOptional {
		return id, nil
	}
	attached := strings.Join(rec.Things, ", ")
	if attached == "" {
		attached = "none"
	}
	return nil, &Refusal{Reason: ReasonClientIDNotThing, Details: fmt.Sprintf(
		"client ID %q is not the name of a thing that certificate %s is attached to (attached: %s); the client ID must be the thing name (behaviour.clientIdMustBeThing)",
		clientID, short(rec.ID), attached)}
}

// Restore rebuilds the identity of a stored session (no connection, no TLS state) from the
// certificate ID it authenticated with: the certificate must still be registered, ACTIVE, within its
// validity and, unless ThingOptional, attached to the client ID's thing, as at a connect.
func (a *Authenticator) Restore(certificateID, clientID string) (*Identity, error) {
	_, cert, err := a.registry.Certificate(certificateID)
	if err != nil {
		return nil, err
	}
	if cert == nil {
		return nil, &Refusal{Reason: ReasonNotRegistered, Details: fmt.Sprintf("certificate %s is no longer registered", short(certificateID))}
	}
	return a.Authenticate([]*x509.Certificate{cert}, clientID)
}

func (a *Authenticator) issuedByTrustedCA(chain []*x509.Certificate, now time.Time) bool {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         a.trusted,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// short abbreviates a certificate ID for messages, as the AWS console does.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
