package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// audioBackend answers multipart requests with what it received: the model
// field, the file's size and SHA-256, read as a stream.
func audioBackend(t *testing.T) *backend {
	be := newBackend(t, "audio")
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var model string
		var size int64
		h := sha256.New()
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			switch p.FormName() {
			case "model":
				b, _ := io.ReadAll(p)
				model = string(b)
			case "file":
				if size, err = io.Copy(h, p); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"text": "ok", "model": model, "bytes": size, "sha256": hex.EncodeToString(h.Sum(nil)), "path": r.URL.Path})
	})
	return be
}

// patterned is a reader of n bytes that are not all the same, made as they
// are read.
type patterned struct{ n, off int64 }

func (p *patterned) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 31 >> 3)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// multipartUpload streams a form with the given fields (in order; "file"
// is a file of size bytes) through a pipe, so the test holds no copy.
func multipartUpload(fields []string, size int64) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for _, f := range fields {
			name, value, _ := strings.Cut(f, "=")
			if name == "file" {
				fw, err := mw.CreateFormFile("file", "audio.wav")
				if err == nil {
					_, err = io.Copy(fw, &patterned{n: size})
				}
				if err != nil {
					pw.CloseWithError(err)
					return
				}
				continue
			}
			_ = mw.WriteField(name, value)
		}
		pw.CloseWithError(mw.Close())
	}()
	return pr, mw.FormDataContentType()
}

func fileSum(size int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &patterned{n: size})
	return hex.EncodeToString(h.Sum(nil))
}

// A 20 MiB transcription is routed by its model field and reaches the
// backend intact, without the gateway holding it: what the process
// allocated for the request is a fraction of the file.
func TestMultipartStreamsToTheModelsPool(t *testing.T) {
	audio := audioBackend(t)
	other := newBackend(t, "other")
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {max_request_body: 64MiB}\n"+
		"pools:\n"+
		"  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+other.URL+"}]}\n"+
		"  - {name: audio, models: [\"whisper-*\"], health_check: {path: \"\"}, backends: [{url: "+audio.URL+"}]}\n")
	const size = 20 << 20
	want := fileSum(size)
	for _, path := range []string{"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits"} {
		body, ct := multipartUpload([]string{"model=whisper-1", "language=en", "file"}, size)
		req, _ := http.NewRequest(http.MethodPost, g.url+path, body)
		req.Header.Set("Content-Type", ct)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		runtime.ReadMemStats(&after)
		var out struct {
			Model, SHA256, Path string
			Bytes               int64
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(got), &out) != nil {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, got)
		}
		if out.Model != "whisper-1" || out.Bytes != size || out.SHA256 != want || out.Path != path {
			t.Fatalf("%s: the backend got model %q, %d bytes (sha256 %s), want whisper-1, %d bytes (%s)", path, out.Model, out.Bytes, out.SHA256, size, want)
		}
		// Client, gateway and backend share this process: everything any of
		// them allocated is counted, and it stays well under the file.
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d KiB allocated by client, gateway and backend for a %d MiB upload", path, alloc>>10, size>>20)
		if alloc > size/2 {
			t.Errorf("%s: %d MiB allocated to pass a %d MiB upload; the body was buffered", path, alloc>>20, size>>20)
		}
		if held := g.srv.bodies.n.Load(); held != 0 {
			t.Errorf("%d body bytes still counted after the request", held)
		}
	}
	if other.count() != 0 {
		t.Errorf("the chat pool got %d multipart requests", other.count())
	}
}

// A multipart request that cannot be routed is refused with a clear error
// before anything reaches a backend.
func TestMultipartRefusals(t *testing.T) {
	audio := audioBackend(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {max_request_body: 1MiB}\n"+
		"auth:\n  keys:\n    - {name: all, key: k-all}\n    - {name: chat-only, key: k-chat, models: [m]}\n"+
		"pools:\n  - {name: audio, models: [\"whisper-*\", m], health_check: {path: \"\"}, backends: [{url: "+audio.URL+"}]}\n")
	for _, tc := range []struct {
		name   string
		fields []string
		size   int64
		key    string
		status int
		msg    string
	}{
		{"model after a large file", []string{"file", "model=whisper-1"}, 200 << 10, "k-all", http.StatusBadRequest, "within its first 64 KiB"},
		{"no model field", []string{"language=en"}, 0, "k-all", http.StatusBadRequest, "form has no"},
		{"empty model", []string{"model="}, 0, "k-all", http.StatusBadRequest, "is empty"},
		{"unknown model", []string{"model=nope", "file"}, 10, "k-all", http.StatusNotFound, "not served here"},
		{"model the tenant may not use", []string{"model=whisper-1", "file"}, 10, "k-chat", http.StatusForbidden, "may not use"},
		{"small file after the model", []string{"model=whisper-1", "file"}, 10, "k-all", http.StatusOK, `"bytes":10`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := multipartUpload(tc.fields, tc.size)
			req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/audio/transcriptions", body)
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer "+tc.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(got, tc.msg) {
				t.Fatalf("%d %s, want %d containing %q", resp.StatusCode, got, tc.status, tc.msg)
			}
		})
	}
	before := audio.count()
	var big bytes.Buffer
	mw := multipart.NewWriter(&big)
	_ = mw.WriteField("model", "whisper-1")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	_, _ = io.Copy(fw, &patterned{n: 2 << 20})
	_ = mw.Close()
	resp := g.post("/v1/audio/transcriptions", big.String(), "Content-Type", mw.FormDataContentType(), "Authorization", "Bearer k-all")
	if got := readAll(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("a 2 MiB form over max_request_body 1MiB: %d %s", resp.StatusCode, got)
	}
	if audio.count() != before {
		t.Fatal("the oversized form reached the backend")
	}
}

// FuzzMultipartModel: whatever the body, the peek returns a prefix of it,
// holds at most the peek limit plus one read, and a model only with no
// error.
func FuzzMultipartModel(f *testing.F) {
	form := func(fields ...string) []byte {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		_ = mw.SetBoundary("b0undary")
		for _, fl := range fields {
			name, value, _ := strings.Cut(fl, "=")
			if name == "file" {
				fw, _ := mw.CreateFormFile("file", "f.bin")
				_, _ = fw.Write([]byte(value))
				continue
			}
			_ = mw.WriteField(name, value)
		}
		_ = mw.Close()
		return b.Bytes()
	}
	f.Add(form("model=whisper-1", "file=abc"))
	f.Add(form("file=xyz", "model=m"))
	f.Add(form("language=en"))
	f.Add(form("model=" + strings.Repeat("x", 600)))
	f.Add([]byte("--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm"))
	f.Add([]byte("--b0undary--\r\n"))
	f.Add([]byte(fmt.Sprintf("--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n\r\n%s\r\n--b0undary--", strings.Repeat("z", 70<<10))))
	f.Fuzz(func(t *testing.T, body []byte) {
		model, prefix, err := peekMultipartModel(bytes.NewReader(body), "b0undary")
		if !bytes.HasPrefix(body, prefix) {
			t.Fatalf("the prefix is not the start of the body")
		}
		if len(prefix) > maxMultipartPeek+8<<10 {
			t.Fatalf("held %d bytes", len(prefix))
		}
		if err != nil && model != "" || len(model) > maxModelField {
			t.Fatalf("model %q with err %v", model, err)
		}
	})
}
