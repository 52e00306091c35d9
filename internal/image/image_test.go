package image_test

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sluice-ai/sluice/internal/image"
)

// TestImage builds sluice the way make image does (static, trimmed, version
// stamped; the first run compiles every package without cgo, later runs
// only link), writes the image with scripts/image, reads the tarball back,
// checks its config and runs the binary taken out of its layer.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sluice")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	const version, revision = "v9.8.7-test", "0123456789abcdef"
	goBuild := exec.Command("go", "build", "-trimpath", "-tags", makeVar(t, root, "TAGS"),
		"-ldflags", "-s -w -X github.com/sluice-ai/sluice/internal/buildinfo.Version="+version+" -X github.com/sluice-ai/sluice/internal/buildinfo.Commit="+revision,
		"-o", bin, "./cmd/sluice")
	goBuild.Dir = root
	goBuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := goBuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	certs := filepath.Join(dir, "ca.pem")
	const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(certs, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "sluice-image.tar")
	const tag = "ghcr.io/sluice-ai/sluice:" + version
	script := exec.Command("go", "run", "./scripts/image",
		"-binary", bin, "-arch", runtime.GOARCH, "-ca-certs", certs,
		"-version", version, "-revision", revision,
		"-tag", tag+",ghcr.io/sluice-ai/sluice:dev", "-o", tarPath)
	script.Dir = root
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image: %v\n%s", err, out)
	}

	for _, tg := range []string{tag, "ghcr.io/sluice-ai/sluice:dev"} {
		ref, err := name.NewTag(tg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tarball.ImageFromPath(tarPath, &ref); err != nil {
			t.Errorf("tag %s not in the tarball: %v", tg, err)
		}
	}
	ref, _ := name.NewTag(tag)
	img, err := tarball.ImageFromPath(tarPath, &ref)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/sluice"}) {
		t.Errorf("entrypoint %q", c.Entrypoint)
	}
	if c.User == "" || c.User == "0" || strings.HasPrefix(c.User, "0:") || strings.HasPrefix(c.User, "root") {
		t.Errorf("user %q, want non-root", c.User)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (what deploy/ runs as)", c.User)
	}
	for _, p := range []string{"8080/tcp", "8081/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.title":    "sluice",
		"org.opencontainers.image.source":   "https://github.com/sluice-ai/sluice",
	} {
		if got := c.Labels[k]; got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1: no base image", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	extracted := filepath.Join(dir, "from-image")
	var gotCerts []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		switch h.Name {
		case "usr/local/bin/sluice":
			f, err := os.OpenFile(extracted, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		case "etc/ssl/certs/ca-certificates.crt":
			if gotCerts, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h := files["usr/local/bin/sluice"]; h == nil || h.Mode&0o111 == 0 || h.Uid != 0 {
		t.Fatalf("binary entry %+v, want a root-owned executable", h)
	}
	if string(gotCerts) != pem {
		t.Errorf("CA bundle in the image = %q, want the given one", gotCerts)
	}
	if h := files["tmp/"]; h == nil || h.Mode&0o1777 != 0o1777 {
		t.Errorf("tmp/ = %+v, want mode 1777", h)
	}
	if h := files["etc/passwd"]; h == nil {
		t.Error("no /etc/passwd naming the user")
	}

	f, err := elf.Open(extracted)
	if err != nil {
		t.Fatalf("the image's binary is not an ELF file: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the image's binary is dynamically linked; the image has no libc")
		}
	}
	f.Close()

	if runtime.GOOS != "linux" {
		t.Skip("the image's binary runs on Linux only")
	}
	out, err := exec.Command(extracted, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("sluice version from the image: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "sluice "+version+"\n") || !strings.Contains(string(out), "commit "+revision) {
		t.Errorf("sluice version printed %q, want version %s and commit %s", out, version, revision)
	}
}

// makeVar returns the default of a "NAME ?= value" line of the Makefile.
func makeVar(t *testing.T, root, name string) string {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*\?=\s*(.*?)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatalf("the Makefile sets no %s ?= default", name)
	}
	return string(m[1])
}

// TestReleaseDeps: the release build (the Makefile's TAGS) links none of
// the packages that only cost size: html/template (through gRPC's
// golang.org/x/net/trace) keeps the linker from dropping unused methods,
// which made the binary half as large again; plotting belongs to the bench/
// programs, never to cmd/sluice.
func TestReleaseDeps(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command("go", "list", "-deps", "-tags", makeVar(t, root, "TAGS"), "./cmd/sluice")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/sluice-ai/sluice/internal/gateway") {
		t.Fatalf("go list -deps ./cmd/sluice does not list the gateway: %q", deps)
	}
	for _, d := range deps {
		if d == "html/template" || d == "golang.org/x/net/trace" || strings.HasPrefix(d, "gonum.org/") {
			t.Errorf("the release binary links %s", d)
		}
	}
}

// TestBuildRejects: missing inputs are errors that say what is missing.
func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("#!"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    image.Options
		want string
	}{
		{"no binary", image.Options{Arch: "amd64", Version: "v1"}, "required"},
		{"no version", image.Options{Binary: bin, Arch: "amd64"}, "required"},
		{"missing binary", image.Options{Binary: filepath.Join(dir, "nope"), Arch: "amd64", Version: "v1"}, "binary"},
		{"missing certs", image.Options{Binary: bin, CACerts: filepath.Join(dir, "nope"), Arch: "amd64", Version: "v1"}, "CA certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := image.Build(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
	img, err := image.Build(image.Options{Binary: bin, Arch: "amd64", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Write(filepath.Join(dir, "x.tar"), img, "not a tag!"); err == nil || !strings.Contains(err.Error(), "not a tag!") {
		t.Errorf("bad tag: err = %v", err)
	}
}
