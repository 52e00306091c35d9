#!/usr/bin/env bash
# Builds the OpenTelemetry Collector the tracing tests export to: a minimal
# distribution (the OTLP receiver, gRPC and HTTP, and the file exporter that
# writes every received span as OTLP JSON lines), from the Go module proxy
# alone. The binary lands in a bin directory with a stamp naming its
# versions; when the stamp matches, this script returns at once. The tests
# (internal/tracing/tracingtest) look for it there, or at $SLUICE_OTELCOL.
#
# A cold build costs about 3 CPU-minutes (2m45s user time measured; 3 to 20
# minutes of wall time on 2 cores, depending on what else runs); a rebuild
# from a warm build cache takes seconds.
# The script prints the binary's path on stdout.
set -euo pipefail

COLLECTOR_VERSION="${COLLECTOR_VERSION:-v0.165.0}"          # go.opentelemetry.io/collector/otelcol and its v0 modules
COLLECTOR_STABLE_VERSION="${COLLECTOR_STABLE_VERSION:-v1.71.0}"  # the collector's v1 modules of the same release
CONTRIB_VERSION="${CONTRIB_VERSION:-v0.165.0}"              # opentelemetry-collector-contrib/exporter/fileexporter

tools="${OTELCOL_ASSETS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/otelcol}"
bin="$tools/bin"
src="$tools/src"
stamp="$bin/stamp"
want="otelcol $COLLECTOR_VERSION fileexporter $CONTRIB_VERSION recipe 2"

log() { printf 'otelcol-test-assets: %s\n' "$*" >&2; }

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/otelcol" ]]; then
  echo "$bin/otelcol"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }

mkdir -p "$tools"
exec 9>"$tools/.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { log "another build is running; waiting for it"; flock 9; }
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/otelcol" ]]; then
    echo "$bin/otelcol"
    exit 0
  fi
fi

rm -f "$stamp"
rm -rf "$src" && mkdir -p "$bin" "$src"
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false"
start=$SECONDS

cat >"$src/go.mod" <<MOD
module sluice.local/test-assets/otelcol

go $(go env GOVERSION | sed 's/^go//')
MOD
cat >"$src/main.go" <<'GO'
// Command otelcol is an OpenTelemetry Collector with only what sluice's
// tracing tests need: the OTLP receiver and the file exporter.
package main

import (
	"fmt"
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func factories() (otelcol.Factories, error) {
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
		return f, err
	}
	return f, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol", Description: "OTLP receiver for sluice tests", Version: "test"},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{envprovider.NewFactory(), fileprovider.NewFactory()},
				DefaultScheme:     "env",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
GO
log "[1/2] resolving the collector $COLLECTOR_VERSION"
(cd "$src" && go get \
  "go.opentelemetry.io/collector/otelcol@$COLLECTOR_VERSION" \
  "go.opentelemetry.io/collector/receiver/otlpreceiver@$COLLECTOR_VERSION" \
  "go.opentelemetry.io/collector/service@$COLLECTOR_VERSION" \
  "go.opentelemetry.io/collector/confmap/provider/envprovider@$COLLECTOR_STABLE_VERSION" \
  "go.opentelemetry.io/collector/confmap/provider/fileprovider@$COLLECTOR_STABLE_VERSION" \
  "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter@$CONTRIB_VERSION" 2>"$src/get.log") || { cat "$src/get.log" >&2; exit 1; }
log "[2/2] building the collector (a few minutes on 2 cores)"
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/otelcol.new" .)
mv "$bin/otelcol.new" "$bin/otelcol"
"$bin/otelcol" --version >/dev/null
# A config check catches a distribution that builds but cannot start.
printf 'receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}\nexporters: {file: {path: "%s/check.jsonl"}}\nservice: {telemetry: {metrics: {level: none}}, pipelines: {traces: {receivers: [otlp], exporters: [file]}}}\n' "$src" >"$src/check.yaml"
"$bin/otelcol" validate --config "file:$src/check.yaml" >&2
echo "$want" >"$stamp"
log "built $want in $((SECONDS - start))s"
echo "$bin/otelcol"
