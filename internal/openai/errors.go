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
	// RetryAfter, when > 0, says the same request may succeed after that
	// long: Write sends it as Retry-After (whole seconds, rounded up, at
	// least 1) and retry-after-ms, which the OpenAI SDKs honour. Zero on a
	// 429 or 503 says waiting would not help (see Write).
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

// RateLimited is a tenant over one of its limits. A retryAfter of 0 marks
// a request no wait would admit (it costs more than the whole limit).
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

// Retryable reports whether sending the same request again may succeed: a
// refusal with a RetryAfter, a 408, or a 5xx other than a 503 without one
// (an upstream that failed or timed out may not fail again).
func (e *Error) Retryable() bool {
	switch {
	case e.RetryAfter > 0, e.Status == http.StatusRequestTimeout:
		return true
	case e.Status == http.StatusServiceUnavailable:
		return false
	}
	return e.Status >= 500
}

// Write sends e as the response. It must be called before anything else has
// been written to w.
//
// The retry headers follow what the OpenAI SDKs act on: a retryable refusal
// carries Retry-After and retry-after-ms; an error retrying cannot fix (a
// 400, 413, a 429 no wait would admit, a 503 of a part that is off) carries
// x-should-retry: false, since the SDKs otherwise retry every 429 and 5xx.
func (e *Error) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	switch {
	case e.RetryAfter > 0:
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		ms := int64((e.RetryAfter + time.Millisecond - 1) / time.Millisecond)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		h.Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
	case !e.Retryable():
		h.Del("Retry-After")
		h.Set("X-Should-Retry", "false")
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}
