package iotapi

import "net/http"

// describeEndpoint answers with the host devices connect to. AWS answers an account-specific
// <prefix>-ats.iot.<region>.amazonaws.com; offline that name resolves nowhere, so the answer is
// iotapi.endpointAddress, or localhost (always in the MQTT server certificate).
func (s *Service) describeEndpoint(w http.ResponseWriter, r *http.Request) error {
	switch t := r.URL.Query().Get("endpointType"); t {
	case "", "iot:Data", "iot:Data-ATS", "iot:CredentialProvider", "iot:Jobs":
	default:
		return invalid("endpointType %q is not iot:Data, iot:Data-ATS, iot:CredentialProvider or iot:Jobs", t)
	}
	addr := s.cfg.EndpointAddress
	if addr == "" {
		addr = "localhost"
	}
	return ok(w, map[string]string{"endpointAddress": addr})
}
