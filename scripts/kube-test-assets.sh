#!/usr/bin/env bash
# Builds the Kubernetes control plane the test suite runs against:
# kube-apiserver and etcd, from the Go module proxy alone (no container
# runtime, no release downloads). The binaries land in a bin directory with a
# stamp file naming their versions; when the stamp matches, this script
# returns at once. Point KUBEBUILDER_ASSETS at that directory to use them
# (the tests in internal/kube do that themselves).
#
# The binaries live outside the checkout (in the user's cache directory, or
# KUBE_ASSETS_DIR) so every clone on a machine shares one build. The script
# prints the bin directory on stdout.
#
# A cold build costs about 16 CPU-minutes (so 8 minutes or more on 2 cores),
# 1.8 GB of memory at its peak and about 4 GB of Go module and build cache;
# it needs only a Go toolchain and network access to the module proxy. A
# rebuild from a warm build cache takes seconds.
#
# Why build instead of download: the published envtest tarballs come from a
# bucket outside the Go module ecosystem. Building from k8s.io/kubernetes
# needs only what `go build` already trusts (the module proxy and sum
# database).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"   # k8s.io/kubernetes; its staging modules are v0.${minor}.${patch}
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"   # go.etcd.io/etcd/server/v3

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${KUBE_ASSETS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/kube}"
bin="$tools/bin"
src="$tools/src"
stamp="$bin/stamp"
want="kube-apiserver $KUBE_VERSION etcd $ETCD_VERSION"

log() { printf 'kube-test-assets: %s\n' "$*" >&2; }

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/kube-apiserver" && -x "$bin/etcd" ]]; then
  log "up to date ($want) in $bin"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }

# One build at a time: `make test` and a test binary may both ask.
mkdir -p "$tools"
exec 9>"$tools/.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { log "another build is running; waiting for it"; flock 9; }
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/kube-apiserver" && -x "$bin/etcd" ]]; then
    log "up to date ($want) in $bin (built meanwhile)"
    exit 0
  fi
fi

rm -f "$stamp"
mkdir -p "$bin" "$src"
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false"
start=$SECONDS

# --- kube-apiserver ---------------------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...)
# at v0.0.0 and replaces them with ./staging directories, which only work
# inside its own repository. A scratch module replaces each with the
# published k8s.io/X release of the same minor and patch.
major_minor_patch="${KUBE_VERSION#v}"
staging_version="v0.${major_minor_patch#*.}"
kube_minor="${major_minor_patch#*.}"; kube_minor="${kube_minor%%.*}"
kube_major="${major_minor_patch%%.*}"

apisrc="$src/kube-apiserver"
rm -rf "$apisrc" && mkdir -p "$apisrc"
log "[1/4] resolving k8s.io/kubernetes@$KUBE_VERSION"
kube_mod="$(cd "$apisrc" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -n "$kube_mod" && -f "$kube_mod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
staging=($(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/.*#\1#p' "$kube_mod" | sort -u))
((${#staging[@]} > 0)) || { log "no staging modules found in $kube_mod"; exit 1; }
log "      ${#staging[@]} staging modules -> $staging_version"
{
  echo "module sluice.local/kube-test-assets/kube-apiserver"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//')"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
  echo ")"
} >"$apisrc/go.mod"

version_flags=(
  "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  "-X k8s.io/component-base/version.gitMajor=$kube_major"
  "-X k8s.io/component-base/version.gitMinor=$kube_minor"
  "-X k8s.io/component-base/version.gitTreeState=clean"
  "-X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  "-X k8s.io/client-go/pkg/version.gitMajor=$kube_major"
  "-X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
  "-X k8s.io/client-go/pkg/version.gitTreeState=clean"
)
log "[2/4] building kube-apiserver $KUBE_VERSION (the long part: several minutes on 2 cores)"
(cd "$apisrc" && go build -trimpath -ldflags "-s -w ${version_flags[*]}" -o "$bin/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$bin/kube-apiserver.new" "$bin/kube-apiserver"
log "      done after $((SECONDS - start))s"

# --- etcd -------------------------------------------------------------------
etcdsrc="$src/etcd"
rm -rf "$etcdsrc" && mkdir -p "$etcdsrc"
cat >"$etcdsrc/go.mod" <<MOD
module sluice.local/kube-test-assets/etcd

go $(go env GOVERSION | sed 's/^go//')

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
cat >"$etcdsrc/main.go" <<'GO'
// Command etcd is etcd's server, built from its Go module for tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
log "[3/4] building etcd $ETCD_VERSION"
(cd "$etcdsrc" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.new" .)
mv "$bin/etcd.new" "$bin/etcd"
log "      done after $((SECONDS - start))s"

# --- check ------------------------------------------------------------------
log "[4/4] checking"
got="$("$bin/kube-apiserver" --version)"
[[ "$got" == "Kubernetes $KUBE_VERSION" ]] || { log "kube-apiserver reports '$got', want 'Kubernetes $KUBE_VERSION'"; exit 1; }
got="$("$bin/etcd" --version)"
[[ "$got" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || { log "etcd reports '${got%%$'\n'*}', want version ${ETCD_VERSION#v}"; exit 1; }
echo "$want" >"$stamp"
log "built $want in $bin in $((SECONDS - start))s"
echo "$bin"
