package batch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/openai"
)

// errLost: another Service took the batch over (this one's claim lapsed).
var errLost = errors.New("batch claimed by another gateway")

// errStale: a segment holds lines another commit already recorded.
var errStale = errors.New("segment holds committed lines")

// lineSlack is what a line may add to its body (custom_id, url, keys).
const lineSlack = 64 << 10

// plan is what batch creation resolved for each line: the pool the
// gateway routes it to.
type plan struct {
	Pools []string `json:"pools"`
	// Line holds, for each request in order, its index in Pools.
	Line []int `json:"line"`
}

func (p *plan) pool(i int) string {
	if i < len(p.Line) && p.Line[i] < len(p.Pools) {
		return p.Pools[p.Line[i]]
	}
	return ""
}

// waiting is a line whose job is submitted and not finished.
type waiting struct {
	index    int
	customID string
}

// result is a finished line, rendered as its output or error file line.
type result struct {
	index int
	ok    bool // output file, else error file
	line  []byte
}

// runner runs one batch on one Service: it submits the batch's lines as
// jobs, a window at a time, collects their results and commits them, and
// writes the output and error files at the end. Its state is the batch
// record; everything it keeps in memory can be rebuilt from the record and
// the job store, which is how a restarted gateway resumes a batch.
type runner struct {
	s      *Service
	id     string
	tenant string
	rec    *record // as last read or written, with its revision

	kickc    chan struct{} // cap 1
	reread   atomic.Bool   // the record changed elsewhere (a cancel)
	mu       sync.Mutex
	announce []string // job IDs announced finished

	plan     *plan
	out      map[string]waiting // job ID → line
	pending  []result           // collected, not yet committed
	held     map[int]bool       // indexes in pending
	retry    *request           // a line whose submission failed
	input    spooled            // the local copy of the input file
	eof      bool               // every line was read
	outDirty bool               // out changed since the record listed it
	ticks    int
}

func newRunner(s *Service, rec *record) *runner {
	return &runner{
		s: s, id: rec.ID, tenant: rec.Tenant, rec: rec,
		kickc: make(chan struct{}, 1),
		out:   make(map[string]waiting),
		held:  make(map[int]bool),
	}
}

// changed tells r that its record changed (a cancel here).
func (r *runner) changed() {
	r.reread.Store(true)
	r.poke()
}

func (r *runner) poke() {
	select {
	case r.kickc <- struct{}{}:
	default:
	}
}

// finished is called when job id was announced finished.
func (r *runner) finished(id string) {
	r.mu.Lock()
	r.announce = append(r.announce, id)
	r.mu.Unlock()
	r.poke()
}

func (r *runner) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// run drives the batch until it is final, ctx ends, or its claim is lost.
func (r *runner) run(ctx context.Context) error {
	if r.rec.Status == StatusValidating {
		now := r.s.clock.Now()
		if err := r.mutate(ctx, func(c *record) error {
			if c.Status == StatusValidating {
				c.Status, c.InProgressAt = StatusInProgress, now
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if r.rec.Status.Final() {
		return nil
	}
	if err := r.loadPlan(ctx); err != nil {
		return r.fail(ctx, "plan_missing", err.Error())
	}
	in, err := r.spoolInput(ctx)
	if errors.Is(err, errNotFound) {
		return r.fail(ctx, "input_file_missing", fmt.Sprintf("input file %s was deleted while the batch ran", r.rec.InputFileID))
	}
	if err != nil {
		return err
	}
	r.input = in
	defer in.Close()
	if err := r.adoptWaiting(ctx); err != nil {
		return err
	}
	lines := newLineReader(in, r.s.opt.MaxRequestBody+lineSlack)

	t := r.s.clock.NewTicker(tick)
	defer t.Stop()
	for {
		switch r.rec.Status {
		case StatusInProgress:
			if !r.s.clock.Now().Before(r.rec.ExpiresAt) {
				return r.abort(ctx, StatusExpired)
			}
			if err := r.fill(ctx, lines); err != nil {
				return err
			}
			if r.eof && len(r.out) == 0 {
				return r.finish(ctx, StatusCompleted, "")
			}
		case StatusCancelling:
			return r.abort(ctx, StatusCancelled)
		case StatusFinalizing:
			return r.finish(ctx, StatusCompleted, "")
		default:
			return nil
		}
		ticked := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.kickc:
		case <-t.Chan():
			ticked = true
			r.ticks++
		}
		if r.reread.Swap(false) {
			if err := r.refresh(ctx); errors.Is(err, errLost) {
				return err
			}
			if r.rec.Status != StatusInProgress {
				continue
			}
		}
		r.collect(ctx, ticked && r.ticks%pollEvery == 0)
		switch {
		case len(r.pending) >= flushLines || (ticked && len(r.pending) > 0):
			if err := r.commit(ctx); err != nil {
				if errors.Is(err, errLost) {
					return err
				}
				r.s.log.Warn("commit batch results", "batch", r.id, "err", err)
			}
		case ticked:
			if err := r.refresh(ctx); err != nil {
				if errors.Is(err, errLost) {
					return err
				}
				r.s.log.Warn("refresh batch", "batch", r.id, "err", err)
			}
		}
	}
}

// spoolInput copies the input file to a local temporary file, which the
// runner reads at the pace lines are submitted.
func (r *runner) spoolInput(ctx context.Context) (spooled, error) {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	rc, err := r.s.st.openFile(ctx, r.rec.InputFileID)
	if err != nil {
		return spooled{}, err
	}
	return spool(rc)
}

func (r *runner) loadPlan(ctx context.Context) error {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	rc, err := r.s.st.openBlob(ctx, planBlob(r.id))
	if err != nil {
		return fmt.Errorf("read the batch's plan: %w", err)
	}
	defer rc.Close()
	var p plan
	if err := json.NewDecoder(rc).Decode(&p); err != nil {
		return fmt.Errorf("decode the batch's plan: %w", err)
	}
	r.plan = &p
	return nil
}

// adoptWaiting takes over the jobs the record lists as waiting (submitted
// by a runner that stopped), with their custom_ids from the input file.
func (r *runner) adoptWaiting(ctx context.Context) error {
	if len(r.rec.Waiting) == 0 {
		return nil
	}
	jobOf := make(map[int]string, len(r.rec.Waiting))
	for _, w := range r.rec.Waiting {
		jobOf[w.Line] = w.Job
	}
	err := scanRequests(r.input, r.s.opt.MaxRequestBody+lineSlack, func(req request) error {
		if id, ok := jobOf[req.index]; ok && !r.rec.Done.has(req.index) {
			r.out[id] = waiting{index: req.index, customID: req.customID}
			r.s.watch(id, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reread input file: %w", err)
	}
	r.collect(ctx, true) // those that finished meanwhile
	_, err = r.input.Seek(0, io.SeekStart)
	return err
}

// waitingList is r.out as the record lists it, by line.
func (r *runner) waitingList() []waitingJob {
	out := make([]waitingJob, 0, len(r.out))
	for id, w := range r.out {
		out = append(out, waitingJob{Line: w.index, Job: id})
	}
	slices.SortFunc(out, func(a, b waitingJob) int { return a.Line - b.Line })
	return out
}

// fill submits lines until the window is full or every line is read.
func (r *runner) fill(ctx context.Context, lines *lineReader) error {
	for len(r.out) < r.s.opt.Window && !r.eof {
		req := r.retry
		r.retry = nil
		if req == nil {
			next, err := lines.next()
			if errors.Is(err, io.EOF) {
				r.eof = true
				return nil
			}
			if err != nil {
				return r.fail(ctx, "input_file_invalid", err.Error())
			}
			req = &next
		}
		if r.rec.Done.has(req.index) || r.held[req.index] {
			continue
		}
		if err := r.submit(ctx, req); err != nil {
			// The job store failed: try this line again at the next tick.
			r.retry = req
			r.s.log.Warn("submit batch line", "batch", r.id, "line", req.line, "err", err)
			return nil
		}
	}
	return nil
}

// idempotencyKey names line customID's job: the same for every submission
// of the line, whichever gateway makes it.
func idempotencyKey(batchID, customID string) string {
	sum := sha256.Sum256([]byte(customID))
	return "batch:" + batchID + ":" + hex.EncodeToString(sum[:])
}

func (r *runner) submit(ctx context.Context, req *request) error {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	job, err := r.s.jobs.Submit(ctx, jobs.SubmitRequest{
		Tenant:         r.tenant,
		Pool:           r.plan.pool(req.index),
		Method:         http.MethodPost,
		Path:           req.url,
		Header:         http.Header{"Content-Type": {"application/json"}},
		Body:           req.body,
		Priority:       jobs.PriorityLow,
		IdempotencyKey: idempotencyKey(r.id, req.customID),
	})
	var oe *openai.Error
	if errors.As(err, &oe) {
		r.hold(result{index: req.index, line: errorLine("", req.customID, oe.Code, oe.Message)})
		return nil
	}
	if err != nil {
		return err
	}
	w := waiting{index: req.index, customID: req.customID}
	if job.Status.Final() {
		// Submitted before a restart, and already done.
		r.hold(r.resultOf(w, job))
		return nil
	}
	if _, known := r.out[job.ID]; !known {
		r.outDirty = true
	}
	r.out[job.ID] = w
	r.s.watch(job.ID, r)
	return nil
}

// hold keeps res for the next commit, once per line: a job that ran twice
// (delivery is at least once) or was found both announced and by a scan
// yields the line's result again, which must not count twice.
func (r *runner) hold(res result) {
	if r.held[res.index] || r.rec.Done.has(res.index) {
		return
	}
	r.pending = append(r.pending, res)
	r.held[res.index] = true
}

// collect records the results of finished jobs: those announced, or every
// unfinished one when all is set.
func (r *runner) collect(ctx context.Context, all bool) {
	r.mu.Lock()
	ids := r.announce
	r.announce = nil
	r.mu.Unlock()
	if all {
		ids = ids[:0:0]
		for id := range r.out {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		w, ok := r.out[id]
		if !ok {
			continue
		}
		opCtx, cancel := r.opCtx(ctx)
		job, err := r.s.store.Get(opCtx, r.tenant, id)
		cancel()
		switch {
		case errors.Is(err, jobs.ErrNotFound):
			r.hold(result{index: w.index, line: errorLine(id, w.customID, "request_lost", "the line's job expired before its result was collected")})
		case err != nil:
			r.s.log.Warn("read batch job", "batch", r.id, "job", id, "err", err)
			continue
		case !job.Status.Final():
			continue
		default:
			r.hold(r.resultOf(w, job))
		}
		delete(r.out, id)
		r.outDirty = true
		r.s.unwatch(id)
	}
}

// resultOf renders a finished job as its output or error file line.
func (r *runner) resultOf(w waiting, job *jobs.Job) result {
	if job.Result != nil {
		reqID := job.Result.Header.Get("X-Request-Id")
		if reqID == "" {
			reqID = job.Request.Header.Get("X-Request-Id")
		}
		ok := job.Status == jobs.StatusSucceeded && job.Result.StatusCode < 400
		return result{index: w.index, ok: ok, line: responseLine(job.ID, w.customID, job.Result.StatusCode, reqID, job.Result.Body)}
	}
	code, msg := "request_failed", job.Error
	if job.Status == jobs.StatusCanceled {
		code, msg = abortCode(r.rec.Status), "the request was cancelled before it finished"
	}
	return result{index: w.index, line: errorLine(job.ID, w.customID, code, msg)}
}

// abortCode is the error code of lines a batch in state s did not run.
func abortCode(s Status) string {
	switch s {
	case StatusExpired, StatusInProgress:
		return "batch_expired"
	}
	return "batch_cancelled"
}

// mutate applies fn to the latest record and writes it, retrying on a
// concurrent change; it fails with errLost if the batch is no longer this
// Service's.
func (r *runner) mutate(ctx context.Context, fn func(*record) error) error {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	for {
		c := r.rec.clone()
		if c.Owner != r.s.id {
			return errLost
		}
		if err := fn(c); err != nil {
			return err
		}
		err := r.s.st.updateBatch(ctx, c)
		if err == nil {
			r.rec = c
			return nil
		}
		if !errors.Is(err, errConflict) {
			return err
		}
		fresh, gerr := r.s.st.batch(ctx, r.tenant, r.id)
		if gerr != nil {
			return gerr
		}
		r.rec = fresh
	}
}

// refresh rereads the record (a cancel may have come from any gateway)
// and renews the claim when a third of the lease passed.
func (r *runner) refresh(ctx context.Context) error {
	now := r.s.clock.Now()
	if r.outDirty || now.Sub(r.rec.Heartbeat) >= r.s.opt.Lease/3 {
		waiting := r.waitingList()
		if err := r.mutate(ctx, func(c *record) error { c.Heartbeat, c.Waiting = now, waiting; return nil }); err != nil {
			return err
		}
		r.outDirty = false
		return nil
	}
	opCtx, cancel := r.opCtx(ctx)
	defer cancel()
	fresh, err := r.s.st.batch(opCtx, r.tenant, r.id)
	if err != nil {
		return err
	}
	if fresh.Owner != r.s.id {
		return errLost
	}
	r.rec = fresh
	return nil
}

// commit writes the pending results as a segment and records it, with
// their lines marked done, in one compare-and-set. A line is therefore in
// exactly one committed segment: a segment whose lines another commit
// recorded meanwhile is dropped, and its other lines are committed anew.
func (r *runner) commit(ctx context.Context) error {
	for len(r.pending) > 0 {
		name := segmentBlob(r.id, rand.Text())
		var buf bytes.Buffer
		for _, p := range r.pending {
			kind := "e"
			if p.ok {
				kind = "o"
			}
			buf.WriteString(strconv.Itoa(p.index) + " " + kind + " ")
			buf.Write(p.line)
			buf.WriteByte('\n')
		}
		opCtx, cancel := r.opCtx(ctx)
		err := r.s.st.putBlob(opCtx, name, &buf)
		cancel()
		if err != nil {
			return err
		}
		now := r.s.clock.Now()
		err = r.mutate(ctx, func(c *record) error {
			for _, p := range r.pending {
				if c.Done.has(p.index) {
					return errStale
				}
			}
			if c.Done == nil {
				c.Done = newBitmap(c.Total)
			}
			for _, p := range r.pending {
				c.Done.set(p.index)
				if p.ok {
					c.Completed++
				} else {
					c.Failed++
				}
			}
			c.Segments = append(c.Segments, name)
			c.Heartbeat = now
			c.Waiting = r.waitingList()
			return nil
		})
		if errors.Is(err, errStale) {
			r.deleteBlobs(ctx, name)
			r.pending = slices.DeleteFunc(r.pending, func(p result) bool { return r.rec.Done.has(p.index) })
			continue
		}
		if err != nil {
			// Unknown whether it was recorded: the segment stays, and the
			// next commit finds out (errStale) which lines it holds.
			return err
		}
		r.pending = r.pending[:0]
		clear(r.held)
		r.outDirty = false
	}
	if len(r.rec.Segments) > maxSegments {
		if err := r.merge(ctx); err != nil {
			r.s.log.Warn("merge batch segments", "batch", r.id, "err", err)
		}
	}
	return nil
}

// merge replaces the committed segments by one holding all of them.
func (r *runner) merge(ctx context.Context) error {
	old := slices.Clone(r.rec.Segments)
	name := segmentBlob(r.id, rand.Text())
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(r.copySegments(ctx, pw, old, "")) }()
	opCtx, cancel := r.opCtx(ctx)
	err := r.s.st.putBlob(opCtx, name, pr)
	cancel()
	pr.Close()
	if err != nil {
		return err
	}
	err = r.mutate(ctx, func(c *record) error {
		if !slices.Equal(c.Segments, old) {
			return errStale
		}
		c.Segments = []string{name}
		return nil
	})
	if err != nil {
		r.deleteBlobs(ctx, name)
		return err
	}
	r.deleteBlobs(ctx, old...)
	return nil
}

// copySegments writes the lines of segments to w: whole segment lines
// when kind is "", else the file lines of that kind ("o" or "e").
func (r *runner) copySegments(ctx context.Context, w io.Writer, segments []string, kind string) error {
	for _, name := range segments {
		blob, err := r.s.st.openBlob(ctx, name)
		if err != nil {
			return err
		}
		rc, err := spool(blob)
		if err != nil {
			return err
		}
		br := bufio.NewReader(rc)
		for {
			l, err := br.ReadBytes('\n')
			if len(l) > 0 {
				out := l
				if kind != "" {
					_, rest, _ := bytes.Cut(l, []byte(" "))
					k, line, _ := bytes.Cut(rest, []byte(" "))
					if string(k) != kind {
						continue
					}
					out = line
				}
				if _, werr := w.Write(out); werr != nil {
					rc.Close()
					return werr
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return err
			}
		}
		rc.Close()
	}
	return nil
}

func (r *runner) deleteBlobs(ctx context.Context, names ...string) {
	ctx, cancel := r.opCtx(ctx)
	defer cancel()
	for _, n := range names {
		if err := r.s.st.deleteBlob(ctx, n); err != nil {
			r.s.log.Warn("delete batch blob", "blob", n, "err", err)
		}
	}
}

// abort ends a batch that was cancelled or expired: it cancels the jobs of
// its lines (queued ones only when cancelled: a running request finishes
// and its result is kept, as at OpenAI), waits for the rest, and records
// every line that did not run in the error file.
func (r *runner) abort(ctx context.Context, final Status) error {
	// An expired batch stays in_progress until it is recorded expired: a
	// runner that resumes it after a crash finds it past its time again.
	code := "batch_cancelled"
	if final == StatusExpired {
		code = "batch_expired"
	}
	r.cancelJobs(ctx, final == StatusExpired)
	t := r.s.clock.NewTicker(tick)
	defer t.Stop()
	for len(r.out) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.kickc:
			r.collect(ctx, false)
		case <-t.Chan():
			r.collect(ctx, true)
		}
	}
	return r.finish(ctx, final, code)
}

// cancelJobs cancels the lines' unfinished jobs: queued ones, and running
// ones too when all is set.
func (r *runner) cancelJobs(ctx context.Context, all bool) {
	for id := range r.out {
		opCtx, cancel := r.opCtx(ctx)
		if all {
			req, _ := http.NewRequestWithContext(context.WithValue(opCtx, tenantKeyT{}, r.tenant), http.MethodDelete, "/v1/jobs/"+id, nil)
			r.s.jobsAPI.ServeHTTP(discard{}, req)
		} else if err := r.s.jobs.CancelQueued(opCtx, r.tenant, id); err != nil && !errors.Is(err, jobs.ErrNotFound) {
			r.s.log.Warn("cancel a line's job", "batch", r.id, "job", id, "err", err)
		}
		cancel()
		r.finished(id) // look at it again
	}
}

// discard is a ResponseWriter that drops the answer.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// finish commits what is pending, records lines that never ran as failed
// with code (when code is set), writes the output and error files and
// records the batch final.
func (r *runner) finish(ctx context.Context, final Status, code string) error {
	if final == StatusCompleted && r.rec.Status == StatusInProgress {
		now := r.s.clock.Now()
		if err := r.mutate(ctx, func(c *record) error {
			c.Status, c.FinalizingAt = StatusFinalizing, now
			return nil
		}); err != nil {
			return err
		}
	}
	if code != "" {
		if err := r.holdUnrun(code); err != nil {
			return err
		}
	}
	if err := r.commit(ctx); err != nil {
		return err
	}
	outID, errID, err := r.writeFiles(ctx)
	if err != nil {
		return err
	}
	now := r.s.clock.Now()
	segments := slices.Clone(r.rec.Segments)
	err = r.mutate(ctx, func(c *record) error {
		c.Status = final
		switch final {
		case StatusCompleted:
			c.CompletedAt = now
		case StatusCancelled:
			c.CancelledAt = now
		case StatusExpired:
			c.ExpiredAt = now
		}
		c.OutputFileID, c.ErrorFileID = outID, errID
		c.Segments, c.Done, c.Owner, c.Waiting = nil, nil, "", nil
		return nil
	})
	if err != nil {
		return err
	}
	r.deleteBlobs(ctx, append(segments, planBlob(r.id))...)
	return nil
}

// holdUnrun adds an error line with code for every line that has no
// result.
func (r *runner) holdUnrun(code string) error {
	if _, err := r.input.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reread input file: %w", err)
	}
	lines := newLineReader(r.input, r.s.opt.MaxRequestBody+lineSlack)
	msg := "the batch was cancelled before this request ran"
	if code == "batch_expired" {
		msg = "the batch expired before this request ran"
	}
	for {
		req, err := lines.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !r.rec.Done.has(req.index) && !r.held[req.index] {
			r.hold(result{index: req.index, line: errorLine("", req.customID, code, msg)})
		}
	}
}

// fileID is the ID of a batch's output or error file: derived from the
// batch, so that finishing again after a crash rewrites the same file.
func fileID(batchID, kind string) string {
	sum := sha256.Sum256([]byte(batchID + "/" + kind))
	return "file-" + hex.EncodeToString(sum[:16])
}

func (r *runner) writeFiles(ctx context.Context) (outID, errID string, err error) {
	write := func(kind, purpose string, n int) (string, error) {
		if n == 0 {
			return "", nil
		}
		name := "output"
		if kind == "e" {
			name = "error"
		}
		now := r.s.clock.Now()
		f := &File{
			ID:        fileID(r.id, name),
			Tenant:    r.tenant,
			CreatedAt: now,
			Filename:  r.id + "_" + name + ".jsonl",
			Purpose:   purpose,
			ExpiresAt: r.s.expiry(now, r.rec.OutputExpiresAfter),
		}
		pr, pw := io.Pipe()
		segments := slices.Clone(r.rec.Segments)
		go func() { pw.CloseWithError(r.copySegments(ctx, pw, segments, kind)) }()
		opCtx, cancel := r.opCtx(ctx)
		defer cancel()
		err := r.s.st.putFile(opCtx, f, pr)
		pr.Close()
		if err != nil {
			return "", err
		}
		return f.ID, nil
	}
	if outID, err = write("o", "batch_output", r.rec.Completed); err != nil {
		return "", "", err
	}
	if errID, err = write("e", "batch_output", r.rec.Failed); err != nil {
		return "", "", err
	}
	return outID, errID, nil
}

// fail records the batch failed with one error.
func (r *runner) fail(ctx context.Context, code, msg string) error {
	now := r.s.clock.Now()
	segments := slices.Clone(r.rec.Segments)
	err := r.mutate(ctx, func(c *record) error {
		c.Status, c.FailedAt = StatusFailed, now
		c.Errors = append(c.Errors, lineError{Code: code, Message: msg})
		c.Segments, c.Done, c.Owner, c.Waiting = nil, nil, "", nil
		return nil
	})
	if err != nil {
		return err
	}
	r.cancelJobs(ctx, true)
	r.deleteBlobs(ctx, append(segments, planBlob(r.id))...)
	return nil
}

func (b *record) clone() *record {
	c := *b
	c.Metadata = cloneMap(b.Metadata)
	c.Errors = slices.Clone(b.Errors)
	c.Done = slices.Clone(b.Done)
	c.Segments = slices.Clone(b.Segments)
	c.Waiting = slices.Clone(b.Waiting)
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Output file lines, as OpenAI writes them.
type outLine struct {
	ID       string       `json:"id"`
	CustomID string       `json:"custom_id"`
	Response *outResponse `json:"response"`
	Error    *outError    `json:"error"`
}

type outResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

type outError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func requestLineID(jobID string) string {
	if jobID == "" {
		return "batch_req_" + rand.Text()
	}
	return "batch_req_" + jobID[len("job_"):]
}

func responseLine(jobID, customID string, status int, requestID string, body []byte) []byte {
	raw := json.RawMessage(bytes.TrimSpace(body))
	if !json.Valid(raw) {
		raw, _ = json.Marshal(string(body))
	} else {
		// One line per request: compact whatever the backend indented.
		var b bytes.Buffer
		if json.Compact(&b, raw) == nil {
			raw = b.Bytes()
		}
	}
	line, _ := json.Marshal(outLine{
		ID: requestLineID(jobID), CustomID: customID,
		Response: &outResponse{StatusCode: status, RequestID: requestID, Body: raw},
	})
	return line
}

func errorLine(jobID, customID, code, msg string) []byte {
	line, _ := json.Marshal(outLine{
		ID: requestLineID(jobID), CustomID: customID,
		Error: &outError{Code: code, Message: msg},
	})
	return line
}
