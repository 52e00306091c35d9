package gateway

import (
	"context"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstore"
	"github.com/sluice-ai/sluice/internal/openai"
)

// jobFailuresKept is how many recent job failures a replica remembers for
// GET /api/jobs/failures and the console.
const jobFailuresKept = 50

// jobErrorMax bounds the error text of one failure (the jobs package writes
// short messages; this keeps the list small whatever it says).
const jobErrorMax = 300

// JobFailure is one job that failed on this replica, in GET
// /api/jobs/failures. It holds what an operator needs to find the job and
// its cause: never the request or response body, headers or callback URL.
type JobFailure struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Pool   string `json:"pool"`
	// Model is the request's "model" field; "" when it has none.
	Model string `json:"model,omitempty"`
	// Attempts is how many attempts ran.
	Attempts int `json:"attempts"`
	// Status is the HTTP status of the last attempt's response; 0 when no
	// response was captured.
	Status int    `json:"status,omitempty"`
	Error  string `json:"error"`
	// Time is when the job failed.
	Time time.Time `json:"time"`
}

// jobFailures is a ring of the latest jobFailuresKept failures. The zero
// value is ready to use.
type jobFailures struct {
	mu   sync.Mutex
	ring [jobFailuresKept]JobFailure
	next int // where the next failure goes
	n    int // how many are kept
}

// add records f unless a failure of the same job is already kept.
func (r *jobFailures) add(f JobFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.n {
		if r.ring[i].ID == f.ID {
			return
		}
	}
	r.ring[r.next] = f
	r.next = (r.next + 1) % len(r.ring)
	r.n = min(r.n+1, len(r.ring))
}

// list returns the kept failures, newest first.
func (r *jobFailures) list() []JobFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]JobFailure, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.ring[(r.next-i+len(r.ring))%len(r.ring)])
	}
	return out
}

// failureOf is what the console may show of a failed job.
func failureOf(job *jobs.Job) JobFailure {
	f := JobFailure{ID: job.ID, Tenant: job.Tenant, Pool: job.Pool, Attempts: job.Attempts, Error: truncate(job.Error, jobErrorMax), Time: job.FinishedAt}
	if info, err := openai.PeekRequest(job.Request.Body); err == nil {
		f.Model = truncate(info.Model, 200)
	}
	if job.Result != nil {
		f.Status = job.Result.StatusCode
	}
	return f
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// failureStore is the job store with one addition: the update that records
// a job failed also records it in failures. Only the update that makes the
// job final counts: later updates of a failed job (its callback's delivery
// attempts) have CallbackAttempts > 0, and add ignores a job it keeps.
type failureStore struct {
	jobstore.Store
	failures *jobFailures
}

// recordJobFailures wraps store, for the job service, so this replica
// remembers the jobs that fail on it (GET /api/jobs/failures); jobs failed
// by other replicas sharing the store are theirs to show. The batch service
// gets store itself: it finds its file storage by the store's type.
func recordJobFailures(store jobstore.Store) jobstore.Store {
	return &failureStore{Store: store, failures: &jobFailures{}}
}

func (s *failureStore) Update(ctx context.Context, job *jobs.Job) error {
	err := s.Store.Update(ctx, job)
	if err == nil && job.Status == jobs.StatusFailed && job.CallbackAttempts == 0 {
		s.failures.add(failureOf(job))
	}
	return err
}

// handleJobFailures answers GET /api/jobs/failures: this replica's latest
// job failures, newest first.
func (s *Server) handleJobFailures(w http.ResponseWriter, _ *http.Request) {
	if s.jobs == nil {
		openai.Unavailable("jobs_unavailable", "the job system is not running", 0).Write(w)
		return
	}
	list := []JobFailure{}
	if fs, ok := s.jobStore.(*failureStore); ok {
		list = fs.failures.list()
	}
	writeJSON(w, map[string]any{"failures": list, "kept": jobFailuresKept})
}
