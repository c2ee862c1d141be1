package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Thing is the registry thing a connection acts as. A Context carries one
// only when the client ID is the name of a thing the certificate is attached
// to: AWS resolves thing policy variables only then
// (reference/aws-iot-core/thing-policy-variables.md).
type Thing struct {
	Name, TypeName string
	Attributes     map[string]string
}

// Context is what is known about one connection. The broker builds it once
// per connection and reuses it for every decision on that connection, so
// values derived from the certificate are computed lazily, once, behind a
// sync.Once: a Context is safe for concurrent use but must not be copied
// after first use (pass *Context).
type Context struct {
	ClientID      string
	CertificateID string            // hex SHA-256 of the certificate's DER
	Certificate   *x509.Certificate // for iot:Certificate.* variables; may be nil
	Thing         *Thing            // nil: thing variables do not resolve
	SourceIP      netip.Addr
	// ConnectAttributes are the iot:ConnectAttributes values of the CONNECT
	// ("PersistentConnect", "LastWill"; reference/aws-iot-core/connect-policy.md).
	ConnectAttributes []string
	// LastWillTopic is the will topic of the CONNECT, "" if none. The
	// condition key iot:LastWillTopic is its topic ARN.
	LastWillTopic string

	once    sync.Once
	derived derived
}

// derived holds the values computed once from the exported fields.
type derived struct {
	sourceIP   string
	subject    map[string][]string // lower-case field name -> values, in certificate order
	issuer     map[string][]string
	subjectAlt map[string][]string
	serial     string
	available  []string
}

// emptyContext stands in for a nil Request.Context: nothing resolves.
var emptyContext Context

func (c *Context) derive() *derived {
	c.once.Do(func() {
		d := &c.derived
		if c.SourceIP.IsValid() {
			d.sourceIP = c.SourceIP.String()
		}
		cert := c.Certificate
		if cert == nil {
			return
		}
		d.subject = dnFields(nameAttrs(cert.Subject))
		d.issuer = dnFields(nameAttrs(cert.Issuer))
		d.subjectAlt = map[string][]string{}
		addAlt := func(k string, vs []string) {
			if len(vs) > 0 {
				d.subjectAlt[k] = capValues(vs)
			}
		}
		addAlt("rfc822name", cert.EmailAddresses)
		addAlt("dnsname", cert.DNSNames)
		var uris, ips []string
		for _, u := range cert.URIs {
			uris = append(uris, u.String())
		}
		for _, ip := range cert.IPAddresses {
			ips = append(ips, ip.String())
		}
		addAlt("uniformresourceidentifier", uris)
		addAlt("ipaddress", ips)
		if cert.SerialNumber != nil {
			d.serial = cert.SerialNumber.String()
		}
		// iot:Certificate.AvailableKeys names every certificate variable that
		// has a value (reference/aws-iot-core/cert-policy-variables.md).
		for _, f := range dnFieldNames {
			if len(d.subject[strings.ToLower(f.name)]) > 0 {
				d.available = append(d.available, "iot:Certificate.Subject."+f.name)
			}
		}
		for _, f := range dnFieldNames {
			if len(d.issuer[strings.ToLower(f.name)]) > 0 {
				d.available = append(d.available, "iot:Certificate.Issuer."+f.name)
			}
		}
		for _, n := range altNames {
			if len(d.subjectAlt[strings.ToLower(n)]) > 0 {
				d.available = append(d.available, "iot:Certificate.Subject.AlternativeName."+n)
			}
		}
		if d.serial != "" {
			d.available = append(d.available, "iot:Certificate.SerialNumber")
		}
	})
	return &c.derived
}

// dnFieldNames are the distinguished-name attributes AWS IoT exposes as
// iot:Certificate.Subject.* and iot:Certificate.Issuer.*
// (reference/aws-iot-core/cert-policy-variables.md), plus Locality.
var dnFieldNames = []struct {
	name string
	oid  asn1.ObjectIdentifier
}{
	{"CommonName", asn1.ObjectIdentifier{2, 5, 4, 3}},
	{"Surname", asn1.ObjectIdentifier{2, 5, 4, 4}},
	{"SerialNumber", asn1.ObjectIdentifier{2, 5, 4, 5}},
	{"Country", asn1.ObjectIdentifier{2, 5, 4, 6}},
	{"Locality", asn1.ObjectIdentifier{2, 5, 4, 7}},
	{"State", asn1.ObjectIdentifier{2, 5, 4, 8}},
	{"Organization", asn1.ObjectIdentifier{2, 5, 4, 10}},
	{"OrganizationalUnit", asn1.ObjectIdentifier{2, 5, 4, 11}},
	{"Title", asn1.ObjectIdentifier{2, 5, 4, 12}},
	{"GivenName", asn1.ObjectIdentifier{2, 5, 4, 42}},
	{"Initials", asn1.ObjectIdentifier{2, 5, 4, 43}},
	{"GenerationQualifier", asn1.ObjectIdentifier{2, 5, 4, 44}},
	{"DistinguishedNameQualifier", asn1.ObjectIdentifier{2, 5, 4, 46}},
	{"Pseudonym", asn1.ObjectIdentifier{2, 5, 4, 65}},
}

// altNames are the iot:Certificate.Subject.AlternativeName.* fields. The
// crypto/x509 package does not parse directory names or the issuer's
// alternative names, so those never resolve here.
var altNames = []string{"RFC822Name", "DNSName", "DirectoryName", "UniformResourceIdentifier", "IPAddress"}

// maxCertValues: "Certificate attributes that contain arrays are limited to
// five items. Additional items are ignored."
// (reference/aws-iot-core/cert-policy-variables.md)
const maxCertValues = 5

func capValues(vs []string) []string {
	if len(vs) > maxCertValues {
		return vs[:maxCertValues]
	}
	return vs
}

// nameAttrs is the name's attributes in certificate order: Names, which
// only a parsed certificate has, else the sequence built from the fields (a
// certificate assembled in code).
func nameAttrs(n pkix.Name) []pkix.AttributeTypeAndValue {
	if len(n.Names) > 0 {
		return n.Names
	}
	var out []pkix.AttributeTypeAndValue
	for _, rdn := range n.ToRDNSequence() {
		out = append(out, rdn...)
	}
	return out
}

// dnFields groups a name's attributes by field, keeping certificate order,
// so that a field's "first value" is the one AWS would substitute.
func dnFields(names []pkix.AttributeTypeAndValue) map[string][]string {
	m := map[string][]string{}
	for _, a := range names {
		for _, f := range dnFieldNames {
			if a.Type.Equal(f.oid) {
				k := strings.ToLower(f.name)
				if s, ok := a.Value.(string); ok && len(m[k]) < maxCertValues {
					m[k] = append(m[k], s)
				}
				break
			}
		}
	}
	return m
}

// keyID identifies a policy variable or condition key.
type keyID uint8

const (
	keyUnknown keyID = iota
	keyClientID
	keyThingName
	keyThingTypeName
	keyThingAttr
	keyThingIsAttached
	keyCertificateID
	keyCertSubject
	keyCertIssuer
	keyCertSubjectAlt
	keyCertIssuerAlt
	keyCertSerial
	keyCertAvailableKeys
	keySourceIP
	keyConnectAttributes
	keyLastWillTopic
	keyCurrentTime
	keyEpochTime
)

// ref is a compiled reference to a context value: a policy variable
// (${...}) or a condition key.
type ref struct {
	id    keyID
	text  string // as written: "${iot:ClientId}" for a variable, the key for a condition
	attr  string // thing attribute name, or lower-case certificate field name
	index int    // certificate field value index (.N), -1 for the first value
	list  bool   // .List suffix: all values
}

// isThing reports whether the reference is a thing policy variable or key (iot:Connection.Thing.*).
func (r *ref) isThing() bool {
	switch r.id {
	case keyThingName, keyThingTypeName, keyThingAttr, keyThingIsAttached:
		return true
	}
	return false
}

// multi reports whether the key has a list of values, which IAM's set
// operators ForAnyValue/ForAllValues compare, and which cannot be a policy
// variable.
func (r *ref) multi() bool {
	return r.list || r.id == keyConnectAttributes || r.id == keyCertAvailableKeys
}

// parseRef compiles a variable or key name. Names are matched
// case-insensitively, as IAM does for condition keys; a thing attribute
// name keeps its case. Unknown names compile to keyUnknown, which never
// resolves: AWS accepts such policies and the statement then matches nothing.
func parseRef(name, text string) ref {
	r := ref{text: text, index: -1}
	l := strings.ToLower(name)
	switch l {
	case "iot:clientid":
		r.id = keyClientID
	case "iot:connection.thing.thingname":
		r.id = keyThingName
	case "iot:connection.thing.thingtypename":
		r.id = keyThingTypeName
	case "iot:connection.thing.isattached":
		r.id = keyThingIsAttached
	case "iot:certificateid":
		r.id = keyCertificateID
	case "iot:certificate.serialnumber":
		r.id = keyCertSerial
	case "iot:certificate.availablekeys":
		r.id = keyCertAvailableKeys
	case "aws:sourceip":
		r.id = keySourceIP
	case "iot:connectattributes":
		r.id = keyConnectAttributes
	case "iot:lastwilltopic":
		r.id = keyLastWillTopic
	case "aws:currenttime":
		r.id = keyCurrentTime
	case "aws:epochtime":
		r.id = keyEpochTime
	}
	if r.id != keyUnknown {
		return r
	}
	const attrPrefix = "iot:connection.thing.attributes["
	if strings.HasPrefix(l, attrPrefix) && strings.HasSuffix(l, "]") && len(l) > len(attrPrefix)+1 {
		r.id = keyThingAttr
		r.attr = name[len(attrPrefix) : len(name)-1]
		return r
	}
	var rest string
	switch {
	case strings.HasPrefix(l, "iot:certificate.subject.alternativename."):
		r.id, rest = keyCertSubjectAlt, l[len("iot:certificate.subject.alternativename."):]
	case strings.HasPrefix(l, "iot:certificate.issuer.alternativename."):
		r.id, rest = keyCertIssuerAlt, l[len("iot:certificate.issuer.alternativename."):]
	case strings.HasPrefix(l, "iot:certificate.subject."):
		r.id, rest = keyCertSubject, l[len("iot:certificate.subject."):]
	case strings.HasPrefix(l, "iot:certificate.issuer."):
		r.id, rest = keyCertIssuer, l[len("iot:certificate.issuer."):]
	default:
		return r
	}
	// Field, Field.N (N-th value, counted from 0: AWS's own example says
	// "Country.1 is replaced by the second country name") or Field.List.
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		suffix := rest[i+1:]
		rest = rest[:i]
		if suffix == "list" {
			r.list = true
		} else if n, err := strconv.Atoi(suffix); err == nil && n >= 0 {
			r.index = n
		} else {
			r.id = keyUnknown
			return r
		}
	}
	if rest == "" {
		r.id = keyUnknown
	}
	r.attr = rest
	return r
}

// evalEnv is the per-evaluation state that is not in the Context.
type evalEnv struct {
	set *Set
	now time.Time
	// noThing: the action is a greengrass: action, for which thing policy variables
	// (iot:Connection.Thing.*) do not resolve: "Thing policy variables (iot:Connection.Thing.*) aren't
	// supported for in AWS IoT policies for core devices or Greengrass data plane operations"
	// (seeds/greengrass-device-authentication-and-authorization.txt; greengrass-v2/device-auth.md).
	noThing bool
}

func (e *evalEnv) time() time.Time {
	if e.now.IsZero() {
		e.now = time.Now()
	}
	return e.now
}

// lookup returns a single-valued key's value. Multi-valued keys (and .List)
// are not single values and never resolve here, as IAM refuses multivalued
// keys as policy variables.
func (c *Context) lookup(r *ref, e *evalEnv) (string, bool) {
	if e != nil && e.noThing && r.isThing() {
		return "", false
	}
	switch r.id {
	case keyClientID:
		return c.ClientID, c.ClientID != ""
	case keyThingName:
		if c.Thing != nil && c.Thing.Name != "" {
			return c.Thing.Name, true
		}
	case keyThingTypeName:
		if c.Thing != nil && c.Thing.TypeName != "" {
			return c.Thing.TypeName, true
		}
	case keyThingAttr:
		if c.Thing != nil {
			v, ok := c.Thing.Attributes[r.attr]
			return v, ok
		}
	case keyThingIsAttached:
		// "This variable has values true or false"
		// (reference/aws-iot-core/thing-policy-variables.md).
		if c.Thing != nil {
			return "true", true
		}
		return "false", true
	case keyCertificateID:
		return c.CertificateID, c.CertificateID != ""
	case keySourceIP:
		d := c.derive()
		return d.sourceIP, d.sourceIP != ""
	case keyCertSerial:
		d := c.derive()
		return d.serial, d.serial != ""
	case keyCertSubject, keyCertIssuer, keyCertSubjectAlt, keyCertIssuerAlt:
		if r.list {
			return "", false
		}
		vs := c.certValues(r)
		i := r.index
		if i < 0 {
			i = 0
		}
		// An index past the last value: "no substitution is made and
		// authorization fails" (reference/aws-iot-core/cert-policy-variables.md).
		if i < len(vs) {
			return vs[i], true
		}
	case keyLastWillTopic:
		if c.LastWillTopic != "" && e != nil && e.set != nil {
			return e.set.base + KindTopic + "/" + c.LastWillTopic, true
		}
	case keyCurrentTime:
		if e != nil {
			return e.time().UTC().Format(time.RFC3339), true
		}
	case keyEpochTime:
		if e != nil {
			return strconv.FormatInt(e.time().Unix(), 10), true
		}
	}
	return "", false
}

// lookupVar is lookup for a policy variable substituted into a Resource or
// a condition value. A certificate attribute containing a wildcard
// character or longer than 1024 characters is not substituted
// (reference/aws-iot-core/cert-policy-variables.md, "X.509 Certificate
// policy variable limitations").
func (c *Context) lookupVar(r *ref, e *evalEnv) (string, bool) {
	v, ok := c.lookup(r, e)
	if !ok {
		return "", false
	}
	switch r.id {
	case keyCertSubject, keyCertIssuer, keyCertSubjectAlt, keyCertIssuerAlt, keyCertSerial:
		if len(v) > 1024 || strings.ContainsAny(v, "*$+?#") {
			return "", false
		}
	}
	return v, true
}

// values returns a multi-valued key's values; present is false when there
// are none, which IAM treats as the key being absent.
func (c *Context) values(r *ref) (vs []string, present bool) {
	switch r.id {
	case keyConnectAttributes:
		vs = c.ConnectAttributes
	case keyCertAvailableKeys:
		vs = c.derive().available
	case keyCertSubject, keyCertIssuer, keyCertSubjectAlt, keyCertIssuerAlt:
		vs = c.certValues(r)
	}
	return vs, len(vs) > 0
}

func (c *Context) certValues(r *ref) []string {
	if c.Certificate == nil {
		return nil
	}
	d := c.derive()
	switch r.id {
	case keyCertSubject:
		return d.subject[r.attr]
	case keyCertIssuer:
		return d.issuer[r.attr]
	case keyCertSubjectAlt:
		return d.subjectAlt[r.attr]
	}
	return nil
}

// present reports whether a key has a value, for the Null operator.
func (c *Context) present(r *ref, e *evalEnv) bool {
	if r.multi() {
		_, ok := c.values(r)
		return ok
	}
	_, ok := c.lookup(r, e)
	return ok
}
