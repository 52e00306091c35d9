package batch

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/openai"
)

// Paths of the APIs.
const (
	filesPath   = "/v1/files"
	batchesPath = "/v1/batches"
)

// Limits of the API.
const (
	maxMetadata      = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
	maxCreateBody    = 64 << 10
	defaultBatchList = 20
	maxBatchList     = 100
	defaultFileList  = 10000
)

// Handler serves the Files and Batch APIs (SPEC section 3):
//
//	POST   /v1/files                 upload (multipart: file, purpose=batch)
//	GET    /v1/files                 the caller's files (?purpose, ?limit, ?after, ?order)
//	GET    /v1/files/{id}            a file
//	GET    /v1/files/{id}/content    its content
//	DELETE /v1/files/{id}            delete it
//	POST   /v1/batches               create a batch from an uploaded file
//	GET    /v1/batches               the caller's batches, newest first (?after, ?limit)
//	GET    /v1/batches/{id}          a batch
//	POST   /v1/batches/{id}/cancel   cancel it
//
// It does not authenticate: mount it behind the gateway's authentication.
// tenantOf names the caller's tenant (nil: every caller is tenant "");
// validate checks each line of a batch as the gateway checks live traffic
// (route, model, the tenant's permissions) and returns its pool (nil: every
// line is accepted, with pool "").
func (s *Service) Handler(tenantOf func(*http.Request) string, validate jobs.ValidateFunc) http.Handler {
	return &api{s: s, tenantOf: tenantOf, validate: validate}
}

type api struct {
	s        *Service
	tenantOf func(*http.Request) string
	validate jobs.ValidateFunc
}

func (a *api) tenant(r *http.Request) string {
	if a.tenantOf == nil {
		return ""
	}
	return a.tenantOf(r)
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == filesPath:
		switch r.Method {
		case http.MethodPost:
			a.upload(w, r)
		case http.MethodGet, http.MethodHead:
			a.listFiles(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case strings.HasPrefix(p, filesPath+"/"):
		id, content := strings.CutSuffix(p[len(filesPath)+1:], "/content")
		if !validID(id, filePrefix) {
			fileNotFound(id).Write(w)
			return
		}
		switch {
		case content && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			a.content(w, r, id)
		case content:
			methodNotAllowed(w, "GET")
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			a.getFile(w, r, id)
		case r.Method == http.MethodDelete:
			a.deleteFile(w, r, id)
		default:
			methodNotAllowed(w, "GET, DELETE")
		}
	case p == batchesPath:
		switch r.Method {
		case http.MethodPost:
			a.create(w, r)
		case http.MethodGet, http.MethodHead:
			a.listBatches(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case strings.HasPrefix(p, batchesPath+"/"):
		id, cancel := strings.CutSuffix(p[len(batchesPath)+1:], "/cancel")
		if !validID(id, batchPrefix) {
			batchNotFound(id).Write(w)
			return
		}
		switch {
		case cancel && r.Method == http.MethodPost:
			a.cancel(w, r, id)
		case cancel:
			methodNotAllowed(w, "POST")
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			a.getBatch(w, r, id)
		default:
			methodNotAllowed(w, "GET")
		}
	default:
		openai.NotFound("not_found", "no such endpoint").Write(w)
	}
}

// IDs: a prefix and the 32 hex digits of a UUIDv7, so they sort by time.
const (
	filePrefix  = "file-"
	batchPrefix = "batch_"
)

func newID(prefix string) (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return prefix + hex.EncodeToString(u[:]), nil
}

func validID(id, prefix string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) != 32 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	(&openai.Error{Status: http.StatusMethodNotAllowed, Message: "method not allowed; use " + allow,
		Type: "invalid_request_error", Code: "method_not_allowed"}).Write(w)
}

func fileNotFound(id string) *openai.Error {
	return openai.NotFound("file_not_found", fmt.Sprintf("no such file: %s", id))
}

func batchNotFound(id string) *openai.Error {
	return openai.NotFound("batch_not_found", fmt.Sprintf("no such batch: %s", id))
}

func badParam(param, msg string) *openai.Error {
	return &openai.Error{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Code: "invalid_" + param}
}

// storageError answers a failure of the storage.
func (a *api) storageError(w http.ResponseWriter, err error) {
	a.s.log.Warn("batch API", "err", err)
	openai.Unavailable("storage_unavailable", "the file and batch storage is unavailable; try again", time.Second).Write(w)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// upload stores a multipart upload: a "file" part and purpose=batch. The
// file is spooled to a temporary file, checked line by line, then stored.
func (a *api) upload(w http.ResponseWriter, r *http.Request) {
	limit := a.s.opt.MaxFileSize
	r.Body = http.MaxBytesReader(w, r.Body, limit+maxCreateBody)
	mr, err := r.MultipartReader()
	if err != nil {
		badParam("file", "upload the file as multipart/form-data with fields file and purpose").Write(w)
		return
	}
	var oerr *openai.Error
	var (
		purpose, filename string
		spool             *os.File
		size              int64
		expires           *expiresAfter
	)
	defer func() {
		if spool != nil {
			spool.Close()
			os.Remove(spool.Name())
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			a.readError(w, err, limit)
			return
		}
		switch part.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				a.readError(w, err, limit)
				return
			}
			purpose = strings.TrimSpace(string(b))
		case "expires_after[anchor]", "expires_after[seconds]":
			b, err := io.ReadAll(io.LimitReader(part, 64))
			if err != nil {
				a.readError(w, err, limit)
				return
			}
			if expires == nil {
				expires = &expiresAfter{}
			}
			v := strings.TrimSpace(string(b))
			if part.FormName() == "expires_after[anchor]" {
				expires.Anchor = v
			} else if expires.Seconds, oerr = parseSeconds(v); oerr != nil {
				oerr.Write(w)
				return
			}
		case "file":
			if spool != nil {
				badParam("file", "upload one file at a time").Write(w)
				return
			}
			filename = part.FileName()
			if spool, err = os.CreateTemp("", "sluice-upload-*"); err != nil {
				a.storageError(w, fmt.Errorf("spool upload: %w", err))
				return
			}
			size, err = io.Copy(spool, io.LimitReader(part, limit+1))
			if err != nil {
				a.readError(w, err, limit)
				return
			}
			if size > limit {
				openai.TooLarge(fmt.Sprintf("the file exceeds %d bytes (jobs.max_file_size)", limit)).Write(w)
				return
			}
		}
		part.Close()
	}
	switch {
	case spool == nil:
		badParam("file", "the file field is missing").Write(w)
		return
	case purpose == "":
		badParam("purpose", "the purpose field is missing; want batch").Write(w)
		return
	case purpose != "batch":
		badParam("purpose", fmt.Sprintf("purpose %q is not supported; files here are batch input (purpose=batch)", purpose)).Write(w)
		return
	}
	if expires != nil {
		if oerr := expires.check("expires_after"); oerr != nil {
			oerr.Write(w)
			return
		}
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		a.storageError(w, err)
		return
	}
	lines, _, err := checkFile(spool, a.s.opt.MaxRequestBody+lineSlack)
	if err != nil {
		var le *LineError
		if errors.As(err, &le) {
			(&openai.Error{Status: http.StatusBadRequest, Message: "invalid batch file: " + le.Error(), Type: "invalid_request_error", Code: "invalid_file"}).Write(w)
			return
		}
		if errors.Is(err, errEmptyFile) {
			(&openai.Error{Status: http.StatusBadRequest, Message: "invalid batch file: " + err.Error(), Type: "invalid_request_error", Code: "invalid_file"}).Write(w)
			return
		}
		a.storageError(w, err)
		return
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		a.storageError(w, err)
		return
	}
	id, err := newID(filePrefix)
	if err != nil {
		a.storageError(w, err)
		return
	}
	now := a.s.clock.Now()
	f := &File{
		ID: id, Tenant: a.tenant(r), Bytes: size, CreatedAt: now,
		Filename: cmp.Or(filename, "upload.jsonl"), Purpose: purpose, Lines: lines,
		ExpiresAt: a.s.expiry(now, expires),
	}
	if err := a.s.st.putFile(r.Context(), f, spool); err != nil {
		a.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileView(f))
}

// readError answers a failure to read the upload.
func (a *api) readError(w http.ResponseWriter, err error, limit int64) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		openai.TooLarge(fmt.Sprintf("the file exceeds %d bytes (jobs.max_file_size)", limit)).Write(w)
		return
	}
	badParam("file", "read the upload: "+err.Error()).Write(w)
}

// file returns the record of file id of the caller, or errNotFound if
// there is none or it expired.
func (a *api) file(r *http.Request, id string) (*File, error) {
	f, err := a.s.st.file(r.Context(), a.tenant(r), id)
	if err == nil && f.expired(a.s.clock.Now()) {
		return nil, errNotFound
	}
	return f, err
}

func (a *api) getFile(w http.ResponseWriter, r *http.Request, id string) {
	f, err := a.file(r, id)
	if errors.Is(err, errNotFound) {
		fileNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileView(f))
}

func (a *api) content(w http.ResponseWriter, r *http.Request, id string) {
	f, err := a.file(r, id)
	if errors.Is(err, errNotFound) {
		fileNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	blob, err := a.s.st.openFile(r.Context(), id)
	if errors.Is(err, errNotFound) {
		fileNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	rc, err := spool(blob)
	if err != nil {
		a.storageError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Content-Length", strconv.FormatInt(f.Bytes, 10))
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": f.Filename}))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, rc)
	}
}

func (a *api) deleteFile(w http.ResponseWriter, r *http.Request, id string) {
	err := a.s.st.deleteFile(r.Context(), a.tenant(r), id)
	if errors.Is(err, errNotFound) {
		fileNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}

// listPage is the OpenAI list shape.
type listPage[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// page cuts items (sorted) after the cursor to limit.
func page[T any](items []T, id func(T) string, after string, limit int) listPage[T] {
	if after != "" {
		if i := slices.IndexFunc(items, func(x T) bool { return id(x) == after }); i >= 0 {
			items = items[i+1:]
		}
	}
	p := listPage[T]{Object: "list", Data: items, HasMore: len(items) > limit}
	if p.HasMore {
		p.Data = items[:limit]
	}
	if p.Data == nil {
		p.Data = []T{}
	}
	if len(p.Data) > 0 {
		first, last := id(p.Data[0]), id(p.Data[len(p.Data)-1])
		p.FirstID, p.LastID = &first, &last
	}
	return p
}

func parseLimit(v string, def, most int) (int, *openai.Error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, badParam("limit", fmt.Sprintf("limit %q: want 1 to %d", v, most))
	}
	return n, nil
}

func (a *api) listFiles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, oerr := parseLimit(q.Get("limit"), defaultFileList, defaultFileList)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	order := cmp.Or(q.Get("order"), "desc")
	if order != "asc" && order != "desc" {
		badParam("order", fmt.Sprintf("order %q: want asc or desc", order)).Write(w)
		return
	}
	files, err := a.s.st.files(r.Context(), a.tenant(r))
	if err != nil {
		a.storageError(w, err)
		return
	}
	now := a.s.clock.Now()
	files = slices.DeleteFunc(files, func(f *File) bool {
		return f.expired(now) || (q.Get("purpose") != "" && f.Purpose != q.Get("purpose"))
	})
	// IDs sort by creation time.
	slices.SortFunc(files, func(x, y *File) int { return strings.Compare(x.ID, y.ID) })
	if order == "desc" {
		slices.Reverse(files)
	}
	views := make([]fileObject, len(files))
	for i, f := range files {
		views[i] = fileView(f)
	}
	writeJSON(w, http.StatusOK, page(views, func(f fileObject) string { return f.ID }, q.Get("after"), limit))
}

// createRequest is the body of POST /v1/batches. Fields OpenAI added
// later are accepted and ignored.
type createRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
	// OutputExpiresAfter sets the expiry of the output and error files.
	OutputExpiresAfter *expiresAfter `json:"output_expires_after"`
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCreateBody))
	if err != nil {
		openai.TooLarge(fmt.Sprintf("the request exceeds %d bytes", maxCreateBody)).Write(w)
		return
	}
	var req createRequest
	if err := json.Unmarshal(body, &req); err != nil {
		openai.BadRequest("invalid JSON body: " + err.Error()).Write(w)
		return
	}
	if oerr := checkCreate(req); oerr != nil {
		oerr.Write(w)
		return
	}
	tenant := a.tenant(r)
	f, err := a.file(r, req.InputFileID)
	if errors.Is(err, errNotFound) || (err == nil && f.Purpose != "batch") {
		(&openai.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("input_file_id %s is not a batch input file of yours", req.InputFileID),
			Type: "invalid_request_error", Code: "invalid_input_file_id"}).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	pl, total, oerr := a.planLines(r, req)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	id, err := newID(batchPrefix)
	if err != nil {
		a.storageError(w, err)
		return
	}
	data, _ := json.Marshal(pl)
	if err := a.s.st.putBlob(r.Context(), planBlob(id), bytes.NewReader(data)); err != nil {
		a.storageError(w, err)
		return
	}
	now := a.s.clock.Now()
	rec := &record{
		ID: id, Tenant: tenant, Endpoint: req.Endpoint, InputFileID: req.InputFileID,
		CompletionWindow: req.CompletionWindow, Metadata: req.Metadata,
		OutputExpiresAfter: req.OutputExpiresAfter,
		Status:             StatusValidating, CreatedAt: now, ExpiresAt: now.Add(completionWindow),
		Total: total,
	}
	if err := a.s.st.createBatch(r.Context(), rec); err != nil {
		a.storageError(w, err)
		return
	}
	a.s.kick()
	writeJSON(w, http.StatusOK, batchView(rec))
}

func checkCreate(req createRequest) *openai.Error {
	switch {
	case req.InputFileID == "":
		return badParam("input_file_id", "input_file_id is required")
	case !slices.Contains(Endpoints, req.Endpoint):
		return badParam("endpoint", fmt.Sprintf("endpoint %q is not supported; want one of %s", req.Endpoint, strings.Join(Endpoints, ", ")))
	case req.CompletionWindow != CompletionWindow:
		return badParam("completion_window", fmt.Sprintf("completion_window %q: only %q is supported", req.CompletionWindow, CompletionWindow))
	case len(req.Metadata) > maxMetadata:
		return badParam("metadata", fmt.Sprintf("metadata holds at most %d pairs", maxMetadata))
	}
	for k, v := range req.Metadata {
		if len(k) > maxMetadataKey || len(v) > maxMetadataValue {
			return badParam("metadata", fmt.Sprintf("metadata keys are at most %d characters and values %d", maxMetadataKey, maxMetadataValue))
		}
	}
	if req.OutputExpiresAfter != nil {
		return req.OutputExpiresAfter.check("output_expires_after")
	}
	return nil
}

// planLines reads the input file and checks every line against the
// batch's endpoint and the gateway's validation, resolving each line's
// pool. Errors name the line.
func (a *api) planLines(r *http.Request, req createRequest) (*plan, int, *openai.Error) {
	blob, err := a.s.st.openFile(r.Context(), req.InputFileID)
	var rc spooled
	if err == nil {
		rc, err = spool(blob)
	}
	if err != nil {
		a.s.log.Warn("batch: read input file", "file", req.InputFileID, "err", err)
		return nil, 0, openai.Unavailable("storage_unavailable", "the input file cannot be read; try again", time.Second)
	}
	defer rc.Close()
	pl := &plan{}
	poolIndex := map[string]int{}
	err = scanRequests(rc, a.s.opt.MaxRequestBody+lineSlack, func(l request) error {
		if l.url != req.Endpoint {
			return &openai.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "mismatched_endpoint",
				Message: fmt.Sprintf("line %d: url %s differs from the batch's endpoint %s", l.line, l.url, req.Endpoint)}
		}
		if len(l.body) > a.s.opt.MaxRequestBody {
			return openai.TooLarge(fmt.Sprintf("line %d: body exceeds %d bytes", l.line, a.s.opt.MaxRequestBody))
		}
		pool := ""
		if a.validate != nil {
			var verr *openai.Error
			if pool, verr = a.validate(r, http.MethodPost, l.url, l.body); verr != nil {
				e := *verr
				e.Message = fmt.Sprintf("line %d (custom_id %q): %s", l.line, l.customID, verr.Message)
				return &e
			}
		}
		i, ok := poolIndex[pool]
		if !ok {
			i = len(pl.Pools)
			poolIndex[pool] = i
			pl.Pools = append(pl.Pools, pool)
		}
		pl.Line = append(pl.Line, i)
		return nil
	})
	var oe *openai.Error
	var le *LineError
	switch {
	case errors.As(err, &oe):
		return nil, 0, oe
	case errors.As(err, &le):
		return nil, 0, &openai.Error{Status: http.StatusBadRequest, Message: "invalid batch file: " + le.Error(), Type: "invalid_request_error", Code: "invalid_file"}
	case err != nil:
		a.s.log.Warn("batch: read input file", "file", req.InputFileID, "err", err)
		return nil, 0, openai.Unavailable("storage_unavailable", "the input file cannot be read; try again", time.Second)
	}
	return pl, len(pl.Line), nil
}

func (a *api) getBatch(w http.ResponseWriter, r *http.Request, id string) {
	rec, err := a.s.st.batch(r.Context(), a.tenant(r), id)
	if errors.Is(err, errNotFound) {
		batchNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, batchView(rec))
}

func (a *api) listBatches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, oerr := parseLimit(q.Get("limit"), defaultBatchList, maxBatchList)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	recs, err := a.s.st.batches(r.Context(), a.tenant(r))
	if err != nil {
		a.storageError(w, err)
		return
	}
	slices.SortFunc(recs, func(x, y *record) int { return strings.Compare(y.ID, x.ID) })
	views := make([]batchObject, len(recs))
	for i, b := range recs {
		views[i] = batchView(b)
	}
	writeJSON(w, http.StatusOK, page(views, func(b batchObject) string { return b.ID }, q.Get("after"), limit))
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request, id string) {
	rec, err := a.s.cancel(r.Context(), a.tenant(r), id)
	if errors.Is(err, errNotFound) {
		batchNotFound(id).Write(w)
		return
	}
	if err != nil {
		a.storageError(w, err)
		return
	}
	switch rec.Status {
	case StatusCompleted, StatusFailed, StatusExpired, StatusFinalizing:
		(&openai.Error{Status: http.StatusConflict, Message: fmt.Sprintf("batch %s is already %s", id, rec.Status),
			Type: "invalid_request_error", Code: "batch_finished"}).Write(w)
		return
	}
	writeJSON(w, http.StatusOK, batchView(rec))
}

// cancel moves batch id to cancelling (unless it is final or already
// cancelling) and wakes its runner if it runs here; a runner elsewhere
// sees it at its next tick.
func (s *Service) cancel(ctx context.Context, tenant, id string) (*record, error) {
	for {
		rec, err := s.st.batch(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		// A finalizing batch has run every line: it completes.
		if rec.Status.Final() || rec.Status == StatusCancelling || rec.Status == StatusFinalizing {
			return rec, nil
		}
		rec.Status, rec.CancellingAt = StatusCancelling, s.clock.Now()
		err = s.st.updateBatch(ctx, rec)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.changed(id)
		return rec, nil
	}
}

// fileObject is OpenAI's file object.
type fileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

func fileView(f *File) fileObject {
	v := fileObject{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(),
		Filename: f.Filename, Purpose: f.Purpose, Status: "processed"}
	if !f.ExpiresAt.IsZero() {
		at := f.ExpiresAt.Unix()
		v.ExpiresAt = &at
	}
	return v
}

// batchObject is OpenAI's batch object.
type batchObject struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Errors           *errorList        `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           Status            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    requestCounts     `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

type errorList struct {
	Object string      `json:"object"`
	Data   []lineError `json:"data"`
}

type requestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

func unix(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func batchView(b *record) batchObject {
	v := batchObject{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: b.Status,
		OutputFileID: optString(b.OutputFileID), ErrorFileID: optString(b.ErrorFileID),
		CreatedAt: b.CreatedAt.Unix(), InProgressAt: unix(b.InProgressAt), ExpiresAt: unix(b.ExpiresAt),
		FinalizingAt: unix(b.FinalizingAt), CompletedAt: unix(b.CompletedAt), FailedAt: unix(b.FailedAt),
		ExpiredAt: unix(b.ExpiredAt), CancellingAt: unix(b.CancellingAt), CancelledAt: unix(b.CancelledAt),
		RequestCounts: requestCounts{Total: b.Total, Completed: b.Completed, Failed: b.Failed},
		Metadata:      b.Metadata,
	}
	if len(b.Errors) > 0 {
		v.Errors = &errorList{Object: "list", Data: b.Errors}
	}
	return v
}
