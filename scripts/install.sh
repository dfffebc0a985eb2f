#!/bin/sh
# install.sh: install tailpod's tools from a release, verified, on a host our Ignition config did
# not provision (an existing Fedora CoreOS, any systemd Linux) or anywhere one tool is wanted.
#
#   install.sh [--version V] [--url BASE] [--prefix DIR] TOOL...
#
# TOOL is quadsync, tailmint or ts4nsnet. The binaries for this machine's architecture are
# downloaded from BASE (default: the GitHub release of version V), checked against the release's
# SHA256SUMS (a missing line or a mismatch refuses the install, and nothing is installed), and
# put in DIR/bin (default /usr/local/bin) atomically: a new file beside the old, then a rename.
# POSIX sh; needs curl or wget, and sha256sum.
set -eu

VERSION=0.1.0
URL=
PREFIX=/usr/local

usage() {
    echo "usage: install.sh [--version V] [--url BASE] [--prefix DIR] quadsync|tailmint|ts4nsnet..." >&2
    exit 2
}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --version) [ $# -ge 2 ] || usage; VERSION=$2; shift 2 ;;
        --url) [ $# -ge 2 ] || usage; URL=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || usage; PREFIX=$2; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage
for tool in "$@"; do
    case $tool in
        quadsync | tailmint | ts4nsnet) ;;
        *) echo "install.sh: unknown tool: $tool" >&2; usage ;;
    esac
done
case $VERSION in
    *[!0-9A-Za-z.+-]* | '') fail "not a version: $VERSION" ;;
esac
[ -n "$URL" ] || URL="https://github.com/tailpod/tailpod/releases/download/v$VERSION"

case $(uname -m) in
    x86_64 | amd64) ARCH=x86_64 ;;
    aarch64 | arm64) ARCH=aarch64 ;;
    *) fail "no release for this architecture: $(uname -m)" ;;
esac

command -v sha256sum >/dev/null || fail "sha256sum is needed"
if command -v curl >/dev/null; then
    fetch() { curl --fail --silent --show-error --location --proto '=https,http' --output "$2" "$1"; }
elif command -v wget >/dev/null; then
    fetch() { wget --quiet --output-document "$2" "$1"; }
else
    fail "curl or wget is needed"
fi

# A private directory for the downloads, removed however the script ends.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' HUP INT TERM

fetch "$URL/SHA256SUMS" "$WORK/SHA256SUMS" || fail "downloading $URL/SHA256SUMS failed"

# Every binary is downloaded and verified before anything is installed.
for tool in "$@"; do
    name=$tool-$VERSION-linux-$ARCH
    expected=$(awk -v name="$name" '$2 == name || $2 == "*" name { print $1; exit }' "$WORK/SHA256SUMS")
    [ -n "$expected" ] || fail "SHA256SUMS has no line for $name; refusing to install it"
    fetch "$URL/$name" "$WORK/$name" || fail "downloading $URL/$name failed"
    actual=$(sha256sum "$WORK/$name" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] ||
        fail "$name does not match SHA256SUMS (got $actual, expected $expected); refusing to install it"
done

mkdir -p "$PREFIX/bin"
for tool in "$@"; do
    name=$tool-$VERSION-linux-$ARCH
    # Beside the target, so the rename is atomic; a name no one else uses.
    new=$(mktemp "$PREFIX/bin/.$tool.XXXXXX")
    cat "$WORK/$name" >"$new"
    chmod 0755 "$new"
    mv -f "$new" "$PREFIX/bin/$tool"
    echo "installed $PREFIX/bin/$tool ($VERSION, $ARCH, sha256 verified)"
done
