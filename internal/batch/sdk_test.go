package batch

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/sdktest"
)

// sdkDir holds the SDK test: package.json pins the official openai
// package, package-lock.json its exact files, sdk.mjs the script.
const sdkDir = "testdata/sdk"

// TestOfficialSDK runs the official openai npm package against the Files
// and Batch APIs served in front of a simulated model: files.create,
// batches.create, polling batches.retrieve, files.content on the output,
// batches.list, batches.cancel and files.delete (testdata/sdk/sdk.mjs).
func TestOfficialSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("installs and runs the openai npm package")
	}
	node, scriptPath := sdktest.Script(t, sdkDir)

	backend := newSimBackend(t, 0)
	g := startGateway(t, backend, gatewayOpts{window: 4})
	api := g.handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/test/hold":
			backend.hold()
		case "/test/release":
			backend.release()
		case "/test/wait-busy":
			deadline := time.Now().Add(waitLimit)
			for backend.gated.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		default:
			api.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	defer backend.release()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, scriptPath)
	cmd.Env = append(os.Environ(), "SLUICE_URL="+srv.URL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the SDK script failed: %v\n%s", err, out.String())
	}
	if got := bytes.TrimSpace(out.Bytes()); string(got) != "ok" {
		t.Fatalf("the SDK script printed %q, want ok", got)
	}
}
