package jobs

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// Status is the state of a job: queued, running, then one of the final
// states succeeded, failed or canceled.
type Status string

// The states of a job.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// Statuses lists every Status, in lifecycle order.
var Statuses = []Status{StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCanceled}

// Final reports whether s is a state a job never leaves.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// Valid reports whether s is one of Statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// Priority orders queued jobs: high before normal before low (see the
// dispatcher's anti-starvation rule in docs/jobs.md).
type Priority string

// The priorities. The zero value "" means PriorityNormal where a request is
// parsed.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Priorities lists every Priority, highest first.
var Priorities = []Priority{PriorityHigh, PriorityNormal, PriorityLow}

// ParsePriority parses "high", "normal" or "low"; "" is normal.
func ParsePriority(s string) (Priority, error) {
	switch Priority(s) {
	case "":
		return PriorityNormal, nil
	case PriorityHigh, PriorityNormal, PriorityLow:
		return Priority(s), nil
	}
	return "", fmt.Errorf("priority %q: want high, normal or low", s)
}

// rank is the index of p in Priorities.
func (p Priority) rank() int {
	switch p {
	case PriorityHigh:
		return 0
	case PriorityLow:
		return 2
	}
	return 1
}

// Job is an asynchronous request and, once it finished, its result.
// Services and stores exchange *Job values; a Job read from a store is the
// caller's to modify.
type Job struct {
	// ID is "job_" and 32 lowercase hex digits (a UUIDv7, so IDs sort by
	// creation time).
	ID string `json:"id"`
	// Tenant owns the job; "" on an open gateway.
	Tenant string `json:"tenant"`
	// Pool is the pool the gateway resolved at submit time.
	Pool string `json:"pool"`
	// Priority orders the job in the queue.
	Priority Priority `json:"priority"`
	// Status is the job's state.
	Status Status `json:"status"`
	// Attempts counts the attempts started so far.
	Attempts int `json:"attempts"`
	// CreatedAt is when the job was submitted.
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is when the latest attempt started; zero before the first.
	StartedAt time.Time `json:"started_at,omitzero"`
	// FinishedAt is when the job reached a final state; zero before.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Error describes why the job failed or was canceled, or why the
	// latest attempt is being retried.
	Error string `json:"error,omitempty"`
	// Request is the request the job replays.
	Request Request `json:"request"`
	// Result is the response of the attempt that finished the job; nil
	// until then, and when no response was captured.
	Result *Result `json:"result,omitempty"`
	// CallbackURL receives the job when it finishes; "" for none.
	CallbackURL string `json:"callback_url,omitempty"`
	// IdempotencyKey makes submissions with the same tenant and key return
	// this job while it is retained; "" for none.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// TraceParent is the span context of the request that submitted the
	// job, which its dispatch spans link to; "" when it was not traced.
	TraceParent string `json:"traceparent,omitempty"`

	// CancelRequested is set when a client cancels a running job: the
	// dispatcher running it (or the one that inherits its lease) then
	// cancels the attempt and records the job canceled.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// RunID identifies the attempt that holds the job while it is running;
	// only that attempt may record the outcome.
	RunID string `json:"run_id,omitempty"`
	// CallbackAttempts counts failed callback deliveries.
	CallbackAttempts int `json:"callback_attempts,omitempty"`

	// Revision is the store's version of this record, the token of the
	// compare-and-set in Store.Update. It is not part of the encoding.
	Revision uint64 `json:"-"`
}

// Request is the HTTP request a job replays.
type Request struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Host   string      `json:"host,omitempty"`
	Header http.Header `json:"header,omitempty"`
	// Body is carried outside the JSON encoding (see MarshalBinary).
	Body []byte `json:"-"`
}

// Result is the captured response of a job's final attempt.
type Result struct {
	StatusCode int         `json:"status_code"`
	Header     http.Header `json:"header,omitempty"`
	// Body is carried outside the JSON encoding (see MarshalBinary).
	Body []byte `json:"-"`
}

// Clone returns a deep copy of j.
func (j *Job) Clone() *Job {
	c := *j
	c.Request.Header = j.Request.Header.Clone()
	c.Request.Body = cloneBytes(j.Request.Body)
	if j.Result != nil {
		r := *j.Result
		r.Header = j.Result.Header.Clone()
		r.Body = cloneBytes(j.Result.Body)
		c.Result = &r
	}
	return &c
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// callbackPending reports whether the job's callback still has to be sent.
func (j *Job) callbackPending(maxAttempts int) bool {
	return j.Status.Final() && j.CallbackURL != "" && j.CallbackAttempts < maxAttempts
}

const idPrefix = "job_"

// NewID returns a fresh job ID: "job_" and the 32 hex digits of a UUIDv7.
func NewID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new job id: %w", err)
	}
	return idPrefix + hex.EncodeToString(u[:]), nil
}

// ValidID reports whether id has the form NewID returns. Stores may rely on
// it: a valid ID is safe in keys and subjects.
func ValidID(id string) bool {
	if len(id) != len(idPrefix)+32 || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

type ctxKey struct{}

// FromContext returns the job whose attempt a request belongs to. The
// gateway uses it to recognise requests from the dispatcher: it then skips
// authentication, applies the job's tenant and priority, and never turns the
// request into a job again. The job must not be modified.
func FromContext(ctx context.Context) (*Job, bool) {
	j, ok := ctx.Value(ctxKey{}).(*Job)
	return j, ok
}

// NewContext returns ctx carrying job, as FromContext reads it.
func NewContext(ctx context.Context, job *Job) context.Context {
	return context.WithValue(ctx, ctxKey{}, job)
}
