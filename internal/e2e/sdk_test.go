package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/sdktest"
)

// sdkDir holds the SDK test: package.json pins the official openai
// package, package-lock.json its exact files, sdk.mjs the script.
const sdkDir = "testdata/sdk"

// runSDK runs testdata/sdk/sdk.mjs against the gateway at url; the script
// prints "ok" when every check passed.
func runSDK(t *testing.T, url string) {
	t.Helper()
	node, scriptPath := sdktest.Script(t, sdkDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, scriptPath)
	cmd.Env = append(os.Environ(), "SLUICE_URL="+url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the SDK script failed: %v\n%s", err, out.String())
	}
	if got := bytes.TrimSpace(out.Bytes()); string(got) != "ok" {
		t.Fatalf("the SDK script printed %q, want ok", got)
	}
}

// TestOpenAISurfaceWithSDK runs the official openai npm package through a
// gateway in front of a real `sluice sim`: a refusal retrying cannot fix is
// sent once, models.list shows the replica's ids behind a pattern,
// models.retrieve answers them, responses.create and responses.stream work
// and their usage is counted, and /v1/rerank routes by model
// (testdata/sdk/sdk.mjs).
func TestOpenAISurfaceWithSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("installs and runs the openai npm package")
	}
	sim := startSim(t, "sdk")
	g := startGateway(t, `listen: LISTEN
admin: {listen: ADMIN}
log: {level: warn}
auth:
  keys:
    - {name: small, key: k-small, limits: {tpm: 2000}}
    - {name: team, key: k-team}
    - {name: resp-a, key: k-resp-a, limits: {tpm: 100000}}
    - {name: resp-s, key: k-resp-s, limits: {tpm: 100000}}
pools:
  - name: sims
    models: ["sim-*"]
    health_check: {path: ""}
    backends:
`+backendsYAML(sim))
	runSDK(t, g.url)

	// The Responses API's usage, whole and streamed, was counted.
	metrics := scrapeText(t, g.admin+"/metrics")
	for _, tenant := range []string{"resp-a", "resp-s"} {
		for _, kind := range []string{"prompt", "completion"} {
			series := `sluice_tokens_total{kind="` + kind + `",pool="sims",tenant="` + tenant + `"} `
			i := strings.Index(metrics, series)
			if i < 0 {
				t.Errorf("no %s in the gateway's metrics", series)
				continue
			}
			v, _, _ := strings.Cut(metrics[i+len(series):], "\n")
			if n, err := strconv.ParseFloat(v, 64); err != nil || n <= 0 {
				t.Errorf("%s%s, want > 0", series, v)
			}
		}
	}
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
