package batch

import (
	"context"
	"errors"
	"io"
	"time"
)

// storage keeps files, batch records and the runners' blobs durably. The
// JetStream implementation keeps them in the job store's engine.
// Every method is safe for concurrent use.
type storage interface {
	// putFile stores content under f.ID, then f's record, with f.Bytes set
	// to the content's size.
	putFile(ctx context.Context, f *File, content io.Reader) error
	// file returns the record of file id of tenant, or errNotFound.
	file(ctx context.Context, tenant, id string) (*File, error)
	// openFile reads the content of file id.
	openFile(ctx context.Context, id string) (io.ReadCloser, error)
	// files returns tenant's file records, in no particular order.
	files(ctx context.Context, tenant string) ([]*File, error)
	// deleteFile removes file id of tenant, or returns errNotFound.
	deleteFile(ctx context.Context, tenant, id string) error
	// expiring returns the records of every tenant's files that expire
	// at or before t.
	expiring(ctx context.Context, t time.Time) ([]*File, error)

	// createBatch records b (status validating) and lists it as active.
	createBatch(ctx context.Context, b *record) error
	// batch returns batch id of tenant, or errNotFound.
	batch(ctx context.Context, tenant, id string) (*record, error)
	// updateBatch replaces b if its revision is still b.rev, sets b.rev,
	// and drops b from the active list once it is final. It returns
	// errConflict if b changed since it was read.
	updateBatch(ctx context.Context, b *record) error
	// batches returns tenant's batch records, in no particular order.
	batches(ctx context.Context, tenant string) ([]*record, error)
	// active returns the batches that are not final.
	active(ctx context.Context) ([]ref, error)

	// putBlob stores data under name, replacing what was there.
	putBlob(ctx context.Context, name string, data io.Reader) error
	// openBlob reads blob name, or returns errNotFound.
	openBlob(ctx context.Context, name string) (io.ReadCloser, error)
	// deleteBlob removes blob name; a missing blob is no error.
	deleteBlob(ctx context.Context, name string) error
}

// ref names a batch.
type ref struct{ tenant, id string }

// Errors of storage implementations.
var (
	errNotFound = errors.New("not found")
	errConflict = errors.New("batch changed concurrently")
)

// File is a stored file's record.
type File struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at"`
	Filename  string    `json:"filename"`
	Purpose   string    `json:"purpose"`
	// Lines counts the requests of a batch input file.
	Lines int `json:"lines,omitempty"`
	// ExpiresAt is when the file is no longer served and becomes due for
	// deletion; zero (files stored before retention existed) for never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Status is a batch's state, as OpenAI names them.
type Status string

// The states of a batch: validating → in_progress → finalizing →
// completed, or failed, expired, or cancelling → cancelled.
const (
	StatusValidating Status = "validating"
	StatusInProgress Status = "in_progress"
	StatusFinalizing Status = "finalizing"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusExpired    Status = "expired"
	StatusCancelling Status = "cancelling"
	StatusCancelled  Status = "cancelled"
)

// Final reports whether a batch in state s never changes again.
func (s Status) Final() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusExpired || s == StatusCancelled
}

// record is a batch as stored: what the API shows, and the runner's state.
type record struct {
	ID               string            `json:"id"`
	Tenant           string            `json:"tenant"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	// OutputExpiresAfter is the expiry policy of the output and error
	// files; nil for Options.FileRetention.
	OutputExpiresAfter *expiresAfter `json:"output_expires_after,omitempty"`
	Status             Status        `json:"status"`
	Errors             []lineError   `json:"errors,omitempty"`
	OutputFileID       string        `json:"output_file_id,omitempty"`
	ErrorFileID        string        `json:"error_file_id,omitempty"`

	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	InProgressAt time.Time `json:"in_progress_at,omitzero"`
	FinalizingAt time.Time `json:"finalizing_at,omitzero"`
	CompletedAt  time.Time `json:"completed_at,omitzero"`
	FailedAt     time.Time `json:"failed_at,omitzero"`
	ExpiredAt    time.Time `json:"expired_at,omitzero"`
	CancellingAt time.Time `json:"cancelling_at,omitzero"`
	CancelledAt  time.Time `json:"cancelled_at,omitzero"`

	// Total is the number of lines; Completed and Failed count the lines
	// committed to the output and the error segments.
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`

	// Done has bit i set once line i's result is in a committed segment.
	Done bitmap `json:"done,omitempty"`
	// Segments are the committed result blobs, in commit order.
	Segments []string `json:"segments,omitempty"`
	// Owner is the Service running the batch; Heartbeat is when it last
	// renewed its claim.
	Owner     string    `json:"owner,omitempty"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	// Waiting lists the lines whose jobs were submitted and had not
	// finished, as of the runner's last write (within a tick of
	// submitting): a runner that resumes the batch cancels or collects
	// them even when the batch ends before it submits anything.
	Waiting []waitingJob `json:"waiting,omitempty"`

	rev uint64
}

// waitingJob is a line and the job running it.
type waitingJob struct {
	Line int    `json:"line"`
	Job  string `json:"job"`
}

// lineError is one entry of a batch's errors.
type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    int    `json:"line,omitempty"`
}

// bitmap is a set of line numbers.
type bitmap []byte

func newBitmap(n int) bitmap { return make(bitmap, (n+7)/8) }

func (b bitmap) has(i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }

func (b bitmap) set(i int) { b[i/8] |= 1 << (i % 8) }

// planBlob, segmentBlob: names of a batch's blobs.
func planBlob(batchID string) string { return batchID + "/plan" }

func segmentBlob(batchID, nonce string) string { return batchID + "/seg/" + nonce }
