// Package awsapi is the machinery every AWS API ggbroker speaks shares: SigV4 verification of the
// caller, routing by the credential scope's service name (the signing name: "iot", "iotdata",
// "iot-jobs-data", "greengrass") to the routes the services register, and AWS' error shape, so that
// the AWS CLI and the AWS SDKs pointed at one --endpoint-url reach every service and raise their own
// error classes. It is no service itself: the broker serves its Router on the control-plane listener.
package awsapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// Error types every AWS API shares (the x-amzn-ErrorType values the SDKs map to error classes).
const (
	ErrInvalidSignature      = "InvalidSignatureException"
	ErrUnrecognizedClient    = "UnrecognizedClientException"
	ErrMissingAuthentication = "MissingAuthenticationTokenException"
	ErrUnknownOperation      = "UnknownOperationException"
	ErrSerialization         = "SerializationException"
	ErrInvalidRequest        = "InvalidRequestException"
	ErrInternalFailure       = "InternalFailureException"
)

// WriteError answers with an AWS error: status, the x-amzn-ErrorType header and {"message": msg}, the
// shape botocore's RestJSONParser and the Go SDK's rest-json deserializers read the error code and
// message from (reference/services/provisioning.md, BOTO-PARSE).
func WriteError(w http.ResponseWriter, status int, errType, msg string) {
	WriteErrorFields(w, status, errType, msg, nil)
}

// WriteErrorFields is WriteError with more members in the body (ResourceAlreadyExistsException's
// resourceId and resourceArn, for example).
func WriteErrorFields(w http.ResponseWriter, status int, errType, msg string, fields map[string]any) {
	body := map[string]any{"message": msg}
	for k, v := range fields {
		body[k] = v
	}
	w.Header().Set("x-amzn-ErrorType", errType)
	WriteJSON(w, status, body)
}

// WriteJSON answers with v as JSON (application/json, as rest-json services do). A nil v writes an
// empty body, which is what AWS sends for operations without output members.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	if v == nil {
		w.WriteHeader(status)
		return
	}
	raw, err := json.Marshal(v)
	if err != nil {
		w.Header().Set("x-amzn-ErrorType", ErrInternalFailure)
		status, raw = http.StatusInternalServerError, []byte(`{"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

// requestID makes the x-amzn-RequestId every answer carries (the SDKs expose it as the request ID).
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
