// Package openai holds the OpenAI-compatible wire types sluice reads and
// writes: the error shape, request fields used for routing and accounting,
// and usage.
package openai

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Error is an OpenAI-shaped API error together with its HTTP status.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
	// RetryAfter, when > 0, is sent as the Retry-After header (seconds,
	// rounded up).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Errors by status, as the data-plane contract lists them.
func BadRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Code: "bad_request"}
}

// Unauthorized is a missing or invalid credential.
func Unauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Message: msg, Type: "authentication_error", Code: "invalid_api_key"}
}

// Forbidden is a model the caller may not use.
func Forbidden(msg string) *Error {
	return &Error{Status: http.StatusForbidden, Message: msg, Type: "permission_error", Code: "model_not_allowed"}
}

// NotFound is an unknown model or route.
func NotFound(code, msg string) *Error {
	return &Error{Status: http.StatusNotFound, Message: msg, Type: "invalid_request_error", Code: code}
}

// TooLarge is a body over limits.max_request_body.
func TooLarge(msg string) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Message: msg, Type: "invalid_request_error", Code: "request_too_large"}
}

// RateLimited is a tenant over one of its limits.
func RateLimited(msg string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Message: msg, Type: "rate_limit_error", Code: "rate_limit_exceeded", RetryAfter: retryAfter}
}

// BadGateway is an upstream failure.
func BadGateway(msg string) *Error {
	return &Error{Status: http.StatusBadGateway, Message: msg, Type: "upstream_error", Code: "upstream_failed"}
}

// Unavailable is no capacity: full queue, no healthy backend, open breaker.
func Unavailable(code, msg string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Message: msg, Type: "overloaded_error", Code: code, RetryAfter: retryAfter}
}

// GatewayTimeout is an upstream that did not answer in time.
func GatewayTimeout(msg string) *Error {
	return &Error{Status: http.StatusGatewayTimeout, Message: msg, Type: "upstream_error", Code: "upstream_timeout"}
}

// Write sends e as the response. It must be called before anything else has
// been written to w.
func (e *Error) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}
