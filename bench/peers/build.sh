#!/usr/bin/env bash
# Builds the Go peers (CoreDNS, etcd, kube-apiserver, the dnstap collector) from their modules, at the
# versions in versions.env, into a cache outside the tree. Idempotent: a peer
# whose binary is already there for its version is not built again.
#
#   bench/peers/build.sh            # all four
#   bench/peers/build.sh etcd       # one (coredns | etcd | kube-apiserver | dnstap)
#
# The cache is $KUBEWIRE_PEERS_DIR (default ~/.cache/kubewire-peers); binaries
# land in $KUBEWIRE_PEERS_DIR/bin as NAME (a symlink to NAME-VERSION).
# Go is used for these peers only; kubewire itself is Rust.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
peers_dir="${KUBEWIRE_PEERS_DIR:-$HOME/.cache/kubewire-peers}"
bin="$peers_dir/bin"
work="$peers_dir/work"
mkdir -p "$bin" "$work"
command -v go >/dev/null || { echo "build.sh: no 'go' on PATH; the peers are built with Go 1.26 from the Go module proxy" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

built() { [ -x "$bin/$1-$2" ]; }
link() { ln -sfn "$1-$2" "$bin/$1"; }
timed() {
  local name=$1 version=$2
  shift 2
  if built "$name" "$version"; then
    link "$name" "$version"
    echo "$name $version: cached at $bin/$name-$version"
    return
  fi
  local start=$SECONDS
  echo "$name $version: building..."
  "$@"
  link "$name" "$version"
  echo "$name $version: built in $((SECONDS - start)) s at $bin/$name-$version"
}

build_coredns() {
  # CoreDNS's go.mod has no replace lines, so go install works; the flags are its Makefile's.
  local gobin="$work/coredns-$COREDNS_VERSION"
  GOBIN="$gobin" go install -tags grpcnotrace -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION" \
    2> >(grep -v '^go: downloading' >&2)
  mv "$gobin/coredns" "$bin/coredns-$COREDNS_VERSION"
}

build_dnstap() {
  # golang-dnstap's own collector: reads Frame Streams from a socket, prints YAML.
  local gobin="$work/dnstap-$DNSTAP_VERSION"
  GOBIN="$gobin" go install -ldflags "-s -w" "github.com/dnstap/golang-dnstap/dnstap@$DNSTAP_VERSION" \
    2> >(grep -v '^go: downloading' >&2)
  mv "$gobin/dnstap" "$bin/dnstap-$DNSTAP_VERSION"
}

build_etcd() {
  # go.etcd.io/etcd/server/v3 has replace lines, so it cannot be go installed;
  # as a dependency of a wrapper module its published siblings are used instead.
  local mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'GO'
// etcd, built from its published module: the same entry point as etcd's own main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$mod"
    [ -f go.mod ] || go mod init kubewire.invalid/peers/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd-$ETCD_VERSION" .
  )
}

build_kube_apiserver() {
  # k8s.io/kubernetes points its staging modules (k8s.io/api, ...) at ./staging
  # with replace lines, which a dependent module cannot follow. The wrapper
  # replaces each with its published version (v0.MINOR.PATCH), a list generated
  # from k8s.io/kubernetes's own go.mod, never written by hand.
  local mod="$work/kube-apiserver-$KUBERNETES_VERSION"
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$mod"
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "build.sh: could not download k8s.io/kubernetes@$KUBERNETES_VERSION's go.mod" >&2; exit 1; }
  {
    echo "module kubewire.invalid/peers/kube-apiserver"
    echo
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
    echo
    echo "replace ("
    # "k8s.io/api => ./staging/src/k8s.io/api" becomes "k8s.io/api => k8s.io/api v0.36.N".
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } >"$mod/go.mod"
  local n
  n=$(grep -c ' => k8s.io/' "$mod/go.mod")
  [ "$n" -gt 10 ] || { echo "build.sh: found only $n staging replaces in k8s.io/kubernetes's go.mod; its layout changed" >&2; exit 1; }
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (
    cd "$mod"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -trimpath -pgo=off -ldflags "$ldflags" -o "$bin/kube-apiserver-$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver
  )
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(etcd kube-apiserver coredns dnstap)
total=$SECONDS
for peer in "${want[@]}"; do
  case $peer in
  coredns) timed coredns "$COREDNS_VERSION" build_coredns ;;
  etcd) timed etcd "$ETCD_VERSION" build_etcd ;;
  kube-apiserver) timed kube-apiserver "$KUBERNETES_VERSION" build_kube_apiserver ;;
  dnstap) timed dnstap "$DNSTAP_VERSION" build_dnstap ;;
  *) echo "build.sh: unknown peer '$peer' (coredns | etcd | kube-apiserver | dnstap)" >&2; exit 2 ;;
  esac
done
echo "peers ready in $bin ($((SECONDS - total)) s)"
