package batch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-ai/sluice/internal/openai"
)

// File retention: every file gets an expiry when it is stored, from the
// upload's expires_after or Options.FileRetention (batch output and error
// files from the batch's output_expires_after or FileRetention). An expired
// file is gone for the API at once; the sweeper deletes it from storage
// sweepGrace later, unless a batch that is not final reads it.
const (
	// DefaultFileRetention is how long files are kept by default: 30
	// days, OpenAI's default for batch files.
	DefaultFileRetention = 30 * 24 * time.Hour
	// minExpiresAfter and maxExpiresAfter bound expires_after[seconds],
	// as at OpenAI (one hour to 30 days).
	minExpiresAfter = 3600
	maxExpiresAfter = 30 * 24 * 3600
	// sweepInterval is how often each Service deletes expired files.
	sweepInterval = time.Minute
	// sweepGrace is how long after its expiry a file is deleted: a batch
	// created from it just before it expired is listed as active by then,
	// and the sweeper spares the input of every active batch.
	sweepGrace = 10 * time.Minute
)

// expired reports whether f is past its expiry at now.
func (f *File) expired(now time.Time) bool {
	return !f.ExpiresAt.IsZero() && !now.Before(f.ExpiresAt)
}

// expiresAfter is OpenAI's expiration policy: anchor "created_at" and a
// number of seconds.
type expiresAfter struct {
	Anchor  string `json:"anchor"`
	Seconds int64  `json:"seconds"`
}

// check validates e; param names the field in errors.
func (e *expiresAfter) check(param string) *openai.Error {
	if e.Anchor != "created_at" {
		return badParam(param+"[anchor]", fmt.Sprintf("anchor %q: want created_at", e.Anchor))
	}
	if e.Seconds < minExpiresAfter || e.Seconds > maxExpiresAfter {
		return badParam(param+"[seconds]", fmt.Sprintf("seconds %d: want %d (1 hour) to %d (30 days)", e.Seconds, minExpiresAfter, maxExpiresAfter))
	}
	return nil
}

// parseSeconds reads the multipart field expires_after[seconds].
func parseSeconds(v string) (int64, *openai.Error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badParam("expires_after[seconds]", fmt.Sprintf("seconds %q: want a whole number", v))
	}
	return n, nil
}

// expiry is when a file created at created expires: after e if given,
// else after the Service's retention.
func (s *Service) expiry(created time.Time, e *expiresAfter) time.Time {
	if e != nil {
		return created.Add(time.Duration(e.Seconds) * time.Second)
	}
	return created.Add(s.opt.FileRetention)
}

// sweep deletes expired files every sweepInterval until ctx ends.
// Several Services may sweep the same storage: deleting is idempotent.
func (s *Service) sweep(ctx context.Context) {
	t := s.clock.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		n, err := s.sweepFiles(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("batch: delete expired files", "deleted", n, "err", err)
		} else if n > 0 {
			s.log.Info("batch: deleted expired files", "deleted", n)
		}
	}
}

// sweepFiles deletes the files that expired sweepGrace ago or earlier,
// except the input files of batches that are not final. It returns how
// many it deleted.
func (s *Service) sweepFiles(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// Files first, then batches: a batch created from a file before it
	// expired is listed by the time the file is sweepGrace past expiry.
	files, err := s.st.expiring(ctx, s.clock.Now().Add(-sweepGrace))
	if err != nil || len(files) == 0 {
		return 0, err
	}
	refs, err := s.st.active(ctx)
	if err != nil {
		return 0, err
	}
	inUse := make(map[string]bool, len(refs))
	for _, ref := range refs {
		rec, err := s.st.batch(ctx, ref.tenant, ref.id)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if !rec.Status.Final() {
			inUse[rec.InputFileID] = true
		}
	}
	deleted := 0
	var errs []error
	for _, f := range files {
		if inUse[f.ID] {
			continue
		}
		switch err := s.st.deleteFile(ctx, f.Tenant, f.ID); {
		case err == nil:
			deleted++
		case !errors.Is(err, errNotFound): // another Service was first
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}
