package shadow

import (
	"fmt"
	"net/http"
)

// Error is a refusal as the Device Shadow service answers it: an HTTP status code and a message. On MQTT
// it becomes the error response document of a */rejected topic, on HTTP the status and AWS' error body.
// The messages are AWS' own, verbatim (services/shadow.md §6, from D-ERR), because device code matches on
// them.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

// The refusals the service gives, with AWS' messages (services/shadow.md §6).
var (
	errInvalidJSON        = &Error{http.StatusBadRequest, "Invalid JSON"}
	errMissingState       = &Error{http.StatusBadRequest, "Missing required node: state"}
	errStateNotObject     = &Error{http.StatusBadRequest, "State node must be an object"}
	errDesiredNotObject   = &Error{http.StatusBadRequest, "Desired node must be an object"}
	errReportedNotObject  = &Error{http.StatusBadRequest, "Reported node must be an object"}
	errInvalidVersion     = &Error{http.StatusBadRequest, "Invalid version"}
	errInvalidClientToken = &Error{http.StatusBadRequest, "Invalid clientToken"}
	errTooDeep            = &Error{http.StatusBadRequest, "JSON contains too many levels of nesting; maximum is 6"}
	errInvalidNode        = &Error{http.StatusBadRequest, "State contains an invalid node"}
	errForbidden          = &Error{http.StatusForbidden, "Forbidden"}
	errVersionConflict    = &Error{http.StatusConflict, "Version conflict"}
	errTooLarge           = &Error{http.StatusRequestEntityTooLarge, "The payload exceeds the maximum size allowed"}
	errEncoding           = &Error{http.StatusUnsupportedMediaType, "Unsupported documented encoding; supported encoding is UTF-8"}
	// AWS gives 429 for more than 10 in-flight requests on one connection without a fixed text (D-ERR).
	errTooManyRequests = &Error{http.StatusTooManyRequests, "Too Many Requests"}
	errInternal        = &Error{http.StatusInternalServerError, "Internal service failure"}
)

// errNoShadow is the 404 for a shadow that does not exist. AWS names the thing for the classic shadow
// ("No shadow exists with name: 'dev1'", a real capture in services/shadow.md §5) and, we take it, the
// shadow's own name for a named one.
func errNoShadow(id ID) *Error {
	name := id.Thing
	if id.Name != "" {
		name = id.Name
	}
	return &Error{http.StatusNotFound, "No shadow exists with name: '" + name + "'"}
}

// errBadName refuses a thing or shadow name outside AWS' rules (services/shadow.md §7). AWS documents
// no text for it; this one says which name is wrong.
func errBadName(what, name string) *Error {
	return &Error{http.StatusBadRequest, fmt.Sprintf("Invalid %s: %q", what, name)}
}

// errorType is the x-amzn-ErrorType of an HTTP refusal: the iot-data model's exception names
// (botocore iot-data/2015-05-28/service-2.json).
func errorType(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "InvalidRequestException"
	case http.StatusUnauthorized:
		return "UnauthorizedException"
	case http.StatusForbidden:
		return "ForbiddenException"
	case http.StatusNotFound:
		return "ResourceNotFoundException"
	case http.StatusMethodNotAllowed:
		return "MethodNotAllowedException"
	case http.StatusConflict:
		return "ConflictException"
	case http.StatusRequestEntityTooLarge:
		return "RequestEntityTooLargeException"
	case http.StatusUnsupportedMediaType:
		return "UnsupportedDocumentEncodingException"
	case http.StatusTooManyRequests:
		return "ThrottlingException"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailableException"
	default:
		return "InternalFailureException"
	}
}
