// Package image builds sluice's container image without a container daemon
// and without pulling a base image: one layer holding the static binary, the
// CA certificates and a passwd entry for the non-root user, on an empty base,
// written as a tarball that `docker load` and `podman load` accept.
//
// The layer's files carry a fixed time and the config the Created time the
// caller gives, so the same binary gives the same image digest.
package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and identity inside the image.
const (
	// BinaryPath is where the sluice binary lives, and the entrypoint.
	BinaryPath = "/usr/local/bin/sluice"
	// CACertsPath is where Go's crypto/x509 looks first on Linux.
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	// User runs the entrypoint: the "nonroot" user of distroless images, so
	// manifests written for those (runAsUser: 65532) fit this one.
	User = "65532:65532"
)

// Ports the image exposes: the gateway's and the admin server's defaults
// in deploy/.
var Ports = []string{"8080/tcp", "8081/tcp"}

// Options describe one image.
type Options struct {
	// Binary is the path of a static Linux sluice binary (CGO_ENABLED=0).
	Binary string
	// CACerts is the path of a PEM bundle of CA certificates, copied to
	// CACertsPath. "" leaves them out, and TLS to upstreams then fails.
	CACerts string
	// Arch is the binary's GOARCH, e.g. amd64 or arm64. Required.
	Arch string
	// Version and Revision become the org.opencontainers.image.version and
	// .revision labels. Version is required.
	Version, Revision string
	// Source is the org.opencontainers.image.source label; "" leaves it out.
	Source string
	// Created is the config's creation time; the zero value gives the Unix
	// epoch, so builds repeat byte for byte.
	Created time.Time
}

// Build returns the image that o describes.
func Build(o Options) (v1.Image, error) {
	if o.Binary == "" || o.Arch == "" || o.Version == "" {
		return nil, errors.New("image: binary, arch and version are required")
	}
	layer, err := newLayer(o)
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Author = "sluice"
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = nil
	cf.Config.User = User
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + CACertsPath}
	cf.Config.ExposedPorts = make(map[string]struct{}, len(Ports))
	for _, p := range Ports {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "sluice",
		"org.opencontainers.image.description": "AI inference gateway, autoscaler, job system and model-server simulator",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	if o.Revision != "" {
		cf.Config.Labels["org.opencontainers.image.revision"] = o.Revision
	}
	if o.Source != "" {
		cf.Config.Labels["org.opencontainers.image.source"] = o.Source
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	cf.Created = v1.Time{Time: created.UTC()}
	cf.History = []v1.History{{Created: cf.Created, CreatedBy: "sluice make image", Comment: "sluice " + o.Version}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: set config: %w", err)
	}
	return img, nil
}

// Write writes img to path as a tarball tagged with each of tags (such as
// ghcr.io/sluice-ai/sluice:dev), the format `docker load` reads.
func Write(path string, img v1.Image, tags ...string) error {
	if len(tags) == 0 {
		return errors.New("image: at least one tag is required")
	}
	refs := make(map[name.Reference]v1.Image, len(tags))
	for _, t := range tags {
		tag, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("image: tag %q: %w", t, err)
		}
		refs[tag] = img
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := tarball.MultiRefWrite(refs, f); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	return nil
}

// layerTime is every file's modification time, so that the layer's digest
// depends on the files' contents only.
var layerTime = time.Unix(0, 0)

// newLayer returns the one layer: the binary, the CA bundle, /etc/passwd and
// /etc/group naming the user, and a writable /tmp.
func newLayer(o Options) (v1.Layer, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("image: binary: %w", err)
	}
	var certs []byte
	if o.CACerts != "" {
		if certs, err = os.ReadFile(o.CACerts); err != nil {
			return nil, fmt.Errorf("image: CA certificates: %w", err)
		}
	}
	var buf bytes.Buffer
	w := &layerWriter{tw: tar.NewWriter(&buf)}
	w.dir("etc/", 0o755)
	w.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	w.file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n"))
	if certs != nil {
		w.dir("etc/ssl/", 0o755)
		w.dir("etc/ssl/certs/", 0o755)
		w.file("etc/ssl/certs/ca-certificates.crt", 0o644, certs)
	}
	w.dir("tmp/", 0o1777)
	w.dir("usr/", 0o755)
	w.dir("usr/local/", 0o755)
	w.dir("usr/local/bin/", 0o755)
	w.file("usr/local/bin/sluice", 0o755, bin)
	if w.err == nil {
		w.err = w.tw.Close()
	}
	if w.err != nil {
		return nil, fmt.Errorf("image: layer: %w", w.err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return layer, nil
}

// layerWriter writes root-owned entries with layerTime; the first error
// sticks and makes later writes no-ops.
type layerWriter struct {
	tw  *tar.Writer
	err error
}

func (w *layerWriter) dir(p string, mode int64) {
	if w.err == nil {
		w.err = w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: mode, ModTime: layerTime, Format: tar.FormatPAX})
	}
}

func (w *layerWriter) file(p string, mode int64, data []byte) {
	if w.err == nil {
		w.err = w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data)), ModTime: layerTime, Format: tar.FormatPAX})
	}
	if w.err == nil {
		_, w.err = w.tw.Write(data)
	}
}
