package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// uploadWith posts content as a batch file with extra form fields.
func (g *gateway) uploadWith(tenant string, fields map[string]string, content []byte) (int, []byte) {
	g.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", "input.jsonl")
	_, _ = fw.Write(content)
	_ = mw.Close()
	return g.do(http.MethodPost, "/v1/files", tenant, mw.FormDataContentType(), buf.Bytes())
}

// stored reports whether file id of tenant is still in storage, expired
// or not.
func (g *gateway) stored(tenant, id string) bool {
	g.t.Helper()
	_, err := g.batch.st.file(context.Background(), tenant, id)
	if err != nil && !errors.Is(err, errNotFound) {
		g.t.Fatal(err)
	}
	return err == nil
}

func TestFileRetention(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testFileRetention(t, gatewayOpts{}) })
	t.Run("redis", func(t *testing.T) { testFileRetention(t, gatewayOpts{redis: redistest.Start(t)}) })
}

// testFileRetention: a file expires after the retention or its own
// expires_after; the API hides it at once and the sweeper deletes it
// sweepGrace later, except the input of a batch still running, which goes
// once the batch ends.
func testFileRetention(t *testing.T, o gatewayOpts) {
	backend := newSimBackend(t, 0)
	backend.hold()
	defer backend.release()
	clock := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))
	o.clock, o.window, o.fileRetention = clock, 2, time.Hour
	g := startGateway(t, backend, o)

	plain := g.mustUpload("t", inputFile(2, "p", sim))
	if plain.ExpiresAt == nil || *plain.ExpiresAt != plain.CreatedAt+3600 {
		t.Fatalf("expires_at %v, want created_at %d + 3600", plain.ExpiresAt, plain.CreatedAt)
	}
	code, body := g.uploadWith("t", map[string]string{"expires_after[anchor]": "created_at", "expires_after[seconds]": "86400"}, inputFile(2, "k", sim))
	if code != http.StatusOK {
		t.Fatalf("upload with expires_after: %d %s", code, body)
	}
	kept := decode[fileObject](t, body)
	if kept.ExpiresAt == nil || *kept.ExpiresAt != kept.CreatedAt+86400 {
		t.Fatalf("expires_at %v, want created_at %d + 86400", kept.ExpiresAt, kept.CreatedAt)
	}
	input := g.mustUpload("t", inputFile(4, "in", sim))
	b := g.mustCreate("t", input.ID)
	waitFor(t, "a line at the backend", func() bool { return backend.calls.Load() > 0 })

	// Expired: gone for the API at once, still in storage.
	clock.Advance(time.Hour)
	if code, _ := g.do(http.MethodGet, "/v1/files/"+plain.ID, "t", "", nil); code != http.StatusNotFound {
		t.Fatalf("GET expired file: %d, want 404", code)
	}
	if code, _ := g.do(http.MethodGet, "/v1/files/"+plain.ID+"/content", "t", "", nil); code != http.StatusNotFound {
		t.Fatalf("GET expired file content: %d, want 404", code)
	}
	if code, body := g.createBatch("t", plain.ID, "/v1/chat/completions"); code != http.StatusBadRequest {
		t.Fatalf("batch from an expired file: %d %s, want 400", code, body)
	}
	_, list := g.do(http.MethodGet, "/v1/files", "t", "", nil)
	if strings.Contains(string(list), plain.ID) || !strings.Contains(string(list), kept.ID) {
		t.Fatalf("file list %s: want %s and not %s", list, kept.ID, plain.ID)
	}
	if !g.stored("t", plain.ID) {
		t.Fatal("an expired file was deleted before its grace period ended")
	}

	// Past the grace period: deleted, but not the running batch's input.
	clock.Advance(sweepGrace)
	if _, err := g.batch.sweepFiles(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g.stored("t", plain.ID) {
		t.Fatal("an expired file is still stored after a sweep")
	}
	if !g.stored("t", input.ID) {
		t.Fatal("the input file of a running batch was deleted")
	}
	if !g.stored("t", kept.ID) {
		t.Fatal("a file with a longer expires_after was deleted")
	}
	if code, _ := g.do(http.MethodGet, "/v1/files/"+kept.ID, "t", "", nil); code != http.StatusOK {
		t.Fatalf("GET unexpired file: %d, want 200", code)
	}

	// The batch ends: its input goes with the next sweep of the
	// background sweeper, and its output keeps the retention.
	backend.release()
	done := g.await("t", b.ID, func() { clock.Advance(time.Second) })
	if done.Status != StatusCompleted {
		t.Fatalf("batch ended %s", done.Status)
	}
	out := decode[fileObject](t, func() []byte {
		_, body := g.do(http.MethodGet, "/v1/files/"+*done.OutputFileID, "t", "", nil)
		return body
	}())
	if out.ExpiresAt == nil || *out.ExpiresAt != out.CreatedAt+3600 {
		t.Fatalf("output file expires_at %v, want created_at %d + 3600", out.ExpiresAt, out.CreatedAt)
	}
	waitFor(t, "the sweeper to delete the finished batch's input", func() bool {
		clock.Advance(sweepInterval)
		return !g.stored("t", input.ID)
	})
}

func TestOutputExpiresAfter(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{clock: clock})
	in := g.mustUpload("t", inputFile(1, "o", sim))
	if *in.ExpiresAt != in.CreatedAt+int64(DefaultFileRetention/time.Second) {
		t.Fatalf("expires_at %d, want created_at %d + 30 days", *in.ExpiresAt, in.CreatedAt)
	}
	req, _ := json.Marshal(map[string]any{"input_file_id": in.ID, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"output_expires_after": map[string]any{"anchor": "created_at", "seconds": 7200}})
	code, body := g.do(http.MethodPost, "/v1/batches", "t", "application/json", req)
	if code != http.StatusOK {
		t.Fatalf("create: %d %s", code, body)
	}
	done := g.await("t", decode[batchObject](t, body).ID, func() { clock.Advance(time.Second) })
	_, body = g.do(http.MethodGet, "/v1/files/"+*done.OutputFileID, "t", "", nil)
	out := decode[fileObject](t, body)
	if out.ExpiresAt == nil || *out.ExpiresAt != out.CreatedAt+7200 {
		t.Fatalf("output file expires_at %v, want created_at %d + 7200", out.ExpiresAt, out.CreatedAt)
	}
}

func TestBadExpiresAfter(t *testing.T) {
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{})
	tests := []struct {
		fields map[string]string
		param  string
	}{
		{map[string]string{"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after[anchor]"},
		{map[string]string{"expires_after[seconds]": "3600"}, "expires_after[anchor]"},
		{map[string]string{"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}, "expires_after[seconds]"},
		{map[string]string{"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after[seconds]"},
		{map[string]string{"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"}, "expires_after[seconds]"},
	}
	for _, tc := range tests {
		code, body := g.uploadWith("t", tc.fields, inputFile(1, "b", sim))
		if code != http.StatusBadRequest || !strings.Contains(string(body), tc.param) {
			t.Errorf("upload with %v: %d %s; want 400 naming %s", tc.fields, code, body, tc.param)
		}
	}
	in := g.mustUpload("t", inputFile(1, "b", sim))
	req, _ := json.Marshal(map[string]any{"input_file_id": in.ID, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"output_expires_after": map[string]any{"anchor": "created_at", "seconds": 10}})
	code, body := g.do(http.MethodPost, "/v1/batches", "t", "application/json", req)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "output_expires_after[seconds]") {
		t.Fatalf("create with output_expires_after.seconds 10: %d %s; want 400", code, body)
	}
}
