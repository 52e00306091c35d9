// Command image writes sluice's container image as a tarball for `docker
// load` or `podman load`, from a static binary that is already built, without
// a container daemon or a base image. `make image` runs it:
//
//	go run ./scripts/image -binary bin/linux-amd64/sluice -arch amd64 \
//	  -version v1.2.0 -revision $(git rev-parse HEAD) \
//	  -tag ghcr.io/sluice-ai/sluice:v1.2.0 -o bin/sluice-image.tar
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/image"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "image:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o image.Options
	var tags, out string
	var created int64
	fs.StringVar(&o.Binary, "binary", "", "static Linux sluice binary (CGO_ENABLED=0)")
	fs.StringVar(&o.Arch, "arch", "", "the binary's GOARCH, e.g. amd64")
	fs.StringVar(&o.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", `PEM bundle of CA certificates ("" leaves them out)`)
	fs.StringVar(&o.Version, "version", "", "org.opencontainers.image.version label")
	fs.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision label (the commit)")
	fs.StringVar(&o.Source, "source", "https://github.com/sluice-ai/sluice", "org.opencontainers.image.source label")
	fs.Int64Var(&created, "created", 0, "creation time in Unix seconds (0: the epoch, for repeatable builds)")
	fs.StringVar(&tags, "tag", "", "comma-separated tags, e.g. ghcr.io/sluice-ai/sluice:dev")
	fs.StringVar(&out, "o", "sluice-image.tar", "output tarball")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if tags == "" {
		return errors.New("-tag is required, e.g. -tag ghcr.io/sluice-ai/sluice:dev")
	}
	if created > 0 {
		o.Created = time.Unix(created, 0)
	}
	img, err := image.Build(o)
	if err != nil {
		return err
	}
	if err := image.Write(out, img, strings.Split(tags, ",")...); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s: %s (%s)\n", out, tags, d)
	return err
}
