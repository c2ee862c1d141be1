package iotapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/awsapi"
)

// AWS IoT's error types and their HTTP statuses (botocore's iot model, error.httpStatusCode).
const (
	errInvalidRequest          = "InvalidRequestException"
	errResourceNotFound        = "ResourceNotFoundException"
	errResourceAlreadyExists   = "ResourceAlreadyExistsException"
	errVersionConflict         = "VersionConflictException"
	errDeleteConflict          = "DeleteConflictException"
	errCertificateState        = "CertificateStateException"
	errCertificateValidation   = "CertificateValidationException"
	errRegistrationCodeInvalid = "RegistrationCodeValidationException"
	errMalformedPolicy         = "MalformedPolicyException"
	errInternalFailure         = "InternalFailureException"
)

var statusOf = map[string]int{
	errInvalidRequest:          http.StatusBadRequest,
	errResourceNotFound:        http.StatusNotFound,
	errResourceAlreadyExists:   http.StatusConflict,
	errVersionConflict:         http.StatusConflict,
	errDeleteConflict:          http.StatusConflict,
	errCertificateState:        http.StatusNotAcceptable,
	errCertificateValidation:   http.StatusBadRequest,
	errRegistrationCodeInvalid: http.StatusBadRequest,
	errMalformedPolicy:         http.StatusBadRequest,
	errInternalFailure:         http.StatusInternalServerError,
	// Greengrass V2's.
	"ValidationException": http.StatusBadRequest,
}

// apiError is an operation's refusal in AWS' terms.
type apiError struct {
	typ    string
	msg    string
	fields map[string]any
}

func (e *apiError) Error() string { return e.typ + ": " + e.msg }

func fail(typ, format string, args ...any) *apiError {
	return &apiError{typ: typ, msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError { return fail(errInvalidRequest, format, args...) }

// fromRegistry maps a registry error to AWS' error type: the sentinel errors of auth say which.
func fromRegistry(err error) error {
	var ae *apiError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, auth.ErrNotFound):
		return fail(errResourceNotFound, "%s", err)
	case errors.Is(err, auth.ErrExists):
		return fail(errResourceAlreadyExists, "%s", err)
	case errors.Is(err, auth.ErrVersionConflict):
		return fail(errVersionConflict, "%s", err)
	case errors.Is(err, auth.ErrDeleteConflict):
		return fail(errDeleteConflict, "%s", err)
	case errors.Is(err, auth.ErrCertificateState):
		return fail(errCertificateState, "%s", err)
	}
	return err
}

// handler runs one operation: an *apiError is AWS' answer; any other error is a 500 whose details
// go to the log, not to the caller.
func (s *Service) handler(op string, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fromRegistry(fn(w, r))
		if err == nil {
			s.metrics.operations.WithLabelValues(op, "success").Inc()
			s.log.Debug("API operation", zap.String("eventType", op), zap.String("status", "Success"))
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			s.log.Error("API operation failed", zap.String("eventType", op), zap.String("status", "Failure"), zap.Error(err))
			ae = fail(errInternalFailure, "%s failed; the broker's log says why", op)
		} else {
			s.log.Info("API operation refused", zap.String("eventType", op), zap.String("status", "Failure"),
				zap.String("reason", ae.typ), zap.String("details", ae.msg))
		}
		s.metrics.operations.WithLabelValues(op, ae.typ).Inc()
		status, ok := statusOf[ae.typ]
		if !ok {
			status = http.StatusBadRequest
		}
		awsapi.WriteErrorFields(w, status, ae.typ, ae.msg, ae.fields)
	})
}

// decode reads a JSON body into v. An empty body is an empty input (botocore sends none for
// operations without body members).
func decode(r *http.Request, v any) error {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return invalid("reading the request body: %v", err)
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return invalid("the request body is not valid JSON for this operation: %v", err)
	}
	return nil
}

// ok answers 200 with v (nil: an empty body).
func ok(w http.ResponseWriter, v any) error {
	awsapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// epoch is AWS' timestamp in rest-json bodies: seconds since the epoch, as a number.
func epoch(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

// queryBool reads a boolean query parameter ("true"/"false"); absent is false.
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("%s must be true or false, got %q", name, v)
	}
	return b, nil
}

// page is one page of a list: the items from the token on, at most size.
type page struct {
	start, end int
	next       string
}

// paginate cuts n sorted items into a page. The token is the index of the page's first item,
// encoded; limitName is the operation's name for the size parameter (maxResults, pageSize).
func paginate(r *http.Request, n int, tokenName, limitName string, def, maxSize int) (page, error) {
	q := r.URL.Query()
	size := def
	if v := q.Get(limitName); v != "" {
		i, err := strconv.Atoi(v)
		if err != nil || i < 1 || i > maxSize {
			return page{}, invalid("%s must be 1 to %d, got %q", limitName, maxSize, v)
		}
		size = i
	}
	start := 0
	if tok := q.Get(tokenName); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		i, err2 := strconv.Atoi(strings.TrimPrefix(string(raw), "ggbroker:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(raw), "ggbroker:") || i < 0 {
			return page{}, invalid("%s %q is not a token this API handed out", tokenName, tok)
		}
		start = min(i, n)
	}
	p := page{start: start, end: min(start+size, n)}
	if p.end < n {
		p.next = base64.RawURLEncoding.EncodeToString([]byte("ggbroker:" + strconv.Itoa(p.end)))
	}
	return p, nil
}

// arn makes an ARN in the core's region and account: arn:aws:iot:REGION:ACCOUNT:kind/name.
func (s *Service) arn(kind, name string) string {
	return "arn:aws:iot:" + s.core.Core.Region + ":" + s.core.Core.AccountID + ":" + kind + "/" + name
}

// certIDFromARN takes a certificate ARN (arn:aws:iot:R:A:cert/<id>) or a bare ID.
func certIDFromARN(principal string) (string, error) {
	id := principal
	if strings.HasPrefix(principal, "arn:") {
		parts := strings.SplitN(principal, ":", 6)
		if len(parts) != 6 || parts[2] != "iot" || !strings.HasPrefix(parts[5], "cert/") {
			return "", invalid("principal %q is not a certificate ARN (arn:aws:iot:REGION:ACCOUNT:cert/ID); only certificates are principals here", principal)
		}
		id = strings.TrimPrefix(parts[5], "cert/")
	}
	if !isCertID(id) {
		return "", invalid("certificate ID %q is not 64 hexadecimal characters", id)
	}
	return id, nil
}

func isCertID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
