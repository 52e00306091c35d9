// Package buildinfo reports the version sluice was built as. Version and
// Commit are set at link time (-ldflags "-X ...") by the Makefile; a plain
// `go build` or `go run` falls back to the module's build information.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/sluice-ai/sluice/internal/buildinfo.Version=v1.2.3".
var (
	Version = ""
	Commit  = ""
)

// Info is what `sluice version` prints.
type Info struct {
	Version, Commit, GoVersion string
}

// Get returns the build's version, commit and Go version.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}
