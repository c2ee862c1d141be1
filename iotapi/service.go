// Package iotapi serves the AWS IoT control-plane API offline (things, certificates, principals,
// policies, CAs, provisioning templates, DescribeEndpoint) and Greengrass V2's client-device
// association and connectivity operations, on the broker's SigV4 API listener, so that the AWS CLI and
// the AWS SDKs pointed at it with --endpoint-url provision devices that then connect over mutual TLS.
//
// There is one source of truth: the registry (auth.Registry), the policy files and the CAs of the
// state directory, which the CLI and the broker use too. Wire names, statuses and error types follow
// botocore's service models (reference/services/provisioning.md).
package iotapi

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/provisioning"
	"github.com/ggbroker/ggbroker/service"
	"github.com/ggbroker/ggbroker/state"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Section is the iotapi config block with its documented defaults.
var Section = config.Section{Key: "iotapi", Defaults: defaultsYAML}

// Config is the iotapi block.
type Config struct {
	// EndpointAddress is DescribeEndpoint's answer ("" = localhost).
	EndpointAddress string `mapstructure:"endpointAddress"`
	// OwnershipTokenValidity is how long a fleet provisioning ownership token is good (AWS: 1 hour).
	OwnershipTokenValidity time.Duration `mapstructure:"ownershipTokenValidity" minDuration:"100ms"`
}

// Service is the AWS IoT API service.
type Service struct {
	cfg   Config
	core  *config.Config
	state *state.State
	log   *zap.Logger

	catalog *provisioning.Catalog

	host    service.Host
	metrics *metrics
	tokens  service.Store // fleet provisioning ownership tokens
	// fleetSlots bounds the fleet provisioning requests in progress (maxFleetInFlight).
	fleetSlots chan struct{}
	wg         sync.WaitGroup // fleet provisioning requests and the token sweep
	// mu serialises the operations that read and then write more than the registry file (policy
	// files, the CA and template stores), so two concurrent requests cannot both create a name.
	mu sync.Mutex
}

// New makes the service from its config block and the state directory.
func New(deps service.Deps) (service.Service, error) {
	s := &Service{core: deps.Config, state: deps.State, log: deps.Log, cfg: Config{OwnershipTokenValidity: time.Hour}}
	if err := deps.Config.Decode(Section.Key, &s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.OwnershipTokenValidity <= 0 {
		return nil, fmt.Errorf("config %s: iotapi.ownershipTokenValidity must be positive, got %s", deps.Config.Source, s.cfg.OwnershipTokenValidity)
	}
	var err error
	if s.catalog, err = provisioning.OpenCatalog(deps.State.Dir); err != nil {
		return nil, err
	}
	return s, nil
}

// Name is "iotapi".
func (s *Service) Name() string { return "iotapi" }

// Start registers the API routes and the fleet provisioning topics.
func (s *Service) Start(ctx context.Context, host service.Host) error {
	s.host = host
	m, err := newMetrics(host.Metrics())
	if err != nil {
		return err
	}
	s.metrics = m
	if err := s.startFleet(ctx, host); err != nil {
		return fmt.Errorf("iotapi: %w", err)
	}
	for _, r := range slices.Concat(s.routes(), s.thingGroupRoutes(), s.greengrassRoutes()) {
		if err := host.HandleAPI(r.signingName, r.pattern, s.handler(r.name, r.fn)); err != nil {
			return fmt.Errorf("iotapi: %w", err)
		}
	}
	host.OnUnknownCertificate(s.justInTime)
	return nil
}

// Stop waits for fleet provisioning requests in flight and the token sweep. Every API operation's
// result is on disk when it answers.
func (s *Service) Stop() error {
	s.wg.Wait()
	return nil
}

// route is one operation: its signing name, method and path, and handler.
type route struct {
	signingName, pattern, name string
	fn                         func(w http.ResponseWriter, r *http.Request) error
}

func (s *Service) routes() []route {
	iot := func(pattern, name string, fn func(http.ResponseWriter, *http.Request) error) route {
		return route{"iot", pattern, name, fn}
	}
	return []route{
		iot("POST /things/{thingName}", "CreateThing", s.createThing),
		iot("GET /things/{thingName}", "DescribeThing", s.describeThing),
		iot("GET /things", "ListThings", s.listThings),
		iot("PATCH /things/{thingName}", "UpdateThing", s.updateThing),
		iot("DELETE /things/{thingName}", "DeleteThing", s.deleteThing),

		iot("POST /keys-and-certificate", "CreateKeysAndCertificate", s.createKeysAndCertificate),
		iot("POST /certificates", "CreateCertificateFromCsr", s.createCertificateFromCsr),
		iot("POST /certificate/register", "RegisterCertificate", s.registerCertificate),
		iot("POST /certificate/register-no-ca", "RegisterCertificateWithoutCA", s.registerCertificateWithoutCA),
		iot("GET /certificates/{certificateId}", "DescribeCertificate", s.describeCertificate),
		iot("GET /certificates", "ListCertificates", s.listCertificates),
		iot("PUT /certificates/{certificateId}", "UpdateCertificate", s.updateCertificate),
		iot("DELETE /certificates/{certificateId}", "DeleteCertificate", s.deleteCertificate),

		iot("PUT /things/{thingName}/principals", "AttachThingPrincipal", s.attachThingPrincipal),
		iot("DELETE /things/{thingName}/principals", "DetachThingPrincipal", s.detachThingPrincipal),
		iot("GET /things/{thingName}/principals", "ListThingPrincipals", s.listThingPrincipals),
		iot("GET /principals/things", "ListPrincipalThings", s.listPrincipalThings),

		iot("POST /policies/{policyName}", "CreatePolicy", s.createPolicy),
		iot("GET /policies/{policyName}", "GetPolicy", s.getPolicy),
		iot("GET /policies", "ListPolicies", s.listPolicies),
		iot("DELETE /policies/{policyName}", "DeletePolicy", s.deletePolicy),
		iot("PUT /target-policies/{policyName}", "AttachPolicy", s.attachPolicy),
		iot("POST /target-policies/{policyName}", "DetachPolicy", s.detachPolicy),
		iot("POST /attached-policies/{target}", "ListAttachedPolicies", s.listAttachedPolicies),
		iot("POST /policy-targets/{policyName}", "ListTargetsForPolicy", s.listTargetsForPolicy),
		iot("POST /test-authorization", "TestAuthorization", s.testAuthorization),

		iot("GET /endpoint", "DescribeEndpoint", s.describeEndpoint),

		iot("GET /registrationcode", "GetRegistrationCode", s.getRegistrationCode),
		iot("POST /cacertificate", "RegisterCACertificate", s.registerCACertificate),
		iot("GET /cacertificate/{caCertificateId}", "DescribeCACertificate", s.describeCACertificate),
		iot("GET /cacertificates", "ListCACertificates", s.listCACertificates),
		iot("PUT /cacertificate/{caCertificateId}", "UpdateCACertificate", s.updateCACertificate),
		iot("DELETE /cacertificate/{caCertificateId}", "DeleteCACertificate", s.deleteCACertificate),
		iot("GET /certificates-by-ca/{caCertificateId}", "ListCertificatesByCA", s.listCertificatesByCA),

		iot("POST /provisioning-templates", "CreateProvisioningTemplate", s.createProvisioningTemplate),
		iot("GET /provisioning-templates/{templateName}", "DescribeProvisioningTemplate", s.describeProvisioningTemplate),
		iot("GET /provisioning-templates", "ListProvisioningTemplates", s.listProvisioningTemplates),
		iot("DELETE /provisioning-templates/{templateName}", "DeleteProvisioningTemplate", s.deleteProvisioningTemplate),
	}
}
