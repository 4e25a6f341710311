# Shared by scripts/dev, scripts/test and scripts/bench: install missing Debian packages.
# shellcheck shell=bash

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wardengate/target}"

# ensure_packages PKG...: apt-get install the packages that are not installed yet.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # RUNLEVEL=1 keeps openssh-server's postinst from starting a system sshd on port 22.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_s3s_fs: the S3-compatible object store the tests and `dev --cluster` run (s3s-fs, the
# s3s project's filesystem-backed S3 server; not in Debian), built once into the tools cache.
# 0.14.1: the last release that builds with this toolchain (0.17 needs rustc 1.96).
ensure_s3s_fs() {
  local root="$HOME/.cache/wardengate/tools"
  if [ -x "$root/bin/s3s-fs" ]; then return 0; fi
  echo "installing s3s-fs 0.14.1 into $root (once; about 2 minutes)" >&2
  CARGO_TARGET_DIR="$root/build" cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$root"
  rm -rf "$root/build"
}
