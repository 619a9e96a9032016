#!/usr/bin/env bash
# Build the Debian package on Debian 12 (as root): dist/s3pvefs_VERSION_ARCH.deb.
# s3pvefs and the libraries Debian lacks go into a private virtualenv under
# /opt/venvs/s3pvefs (dh-virtualenv, see debian/rules). pip, inside the build,
# downloads them from the package index this machine's pip is configured with
# (pip's config files and PIP_* variables, passed on as PIP_* variables).
# The build runs in a copy of the source under /tmp, so the work tree gets no
# build artefacts; only dist/ is written.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# A system PATH: the package is built with and for Debian's python3, never a
# pyenv or virtualenv interpreter found first on the caller's PATH.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PYENV_VERSION

BUILD_DEPS=(dpkg-dev debhelper dh-virtualenv python3 python3-venv python3-dev python3-pip
            libfuse3-dev pkg-config build-essential git)
. scripts/apt.sh
ensure_apt_packages build-deb "${BUILD_DEPS[@]}"

# debian/changelog carries the version; it must be pyproject.toml's.
py_version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
deb_version=$(dpkg-parsechangelog -S Version)
if [ "$py_version" != "$deb_version" ]; then
  echo "build-deb: pyproject.toml says version $py_version but debian/changelog says $deb_version:" >&2
  echo "build-deb: add a debian/changelog entry for $py_version" >&2
  exit 1
fi

# The package index: whatever this machine's pip uses. Settings from pip's config
# files (global, user, site) become PIP_* variables, so the build sees them
# whatever HOME debhelper or a sudo gives it; PIP_* already set win.
while IFS= read -r line; do
  if [[ $line =~ ^(global|install|download)\.([a-z0-9-]+)=\'(.*)\'$ ]]; then
    var=PIP_$(tr 'a-z-' 'A-Z_' <<<"${BASH_REMATCH[2]}")
    [ -n "${!var:-}" ] || export "$var=${BASH_REMATCH[3]}"
  fi
done < <(python3 -m pip config list 2>/dev/null || true)
echo "build-deb: pip settings for the build:"
env | grep '^PIP_' | sed 's/^/  /' || echo "  (none: pip's default index)"

STAGE=$(mktemp -d /tmp/s3pvefs-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
SRC=$STAGE/s3pvefs-$deb_version
mkdir -p "$SRC"
# The work tree as it is (tracked and new files, not what .gitignore names: no
# .venv, no build/, no dist/).
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$ROOT" --null -T - -cf - | tar -C "$SRC" -xf -
else
  tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.hypothesis --exclude=./.pytest_cache \
    -cf - . | tar -C "$SRC" -xf -
fi

echo "build-deb: dpkg-buildpackage -us -uc -b in $SRC"
(cd "$SRC" && dpkg-buildpackage -us -uc -b)

mkdir -p "$ROOT/dist"
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=s3pvefs_${deb_version}_${arch}.deb
for f in "$STAGE"/*.deb "$STAGE"/*.buildinfo "$STAGE"/*.changes; do
  [ -e "$f" ] && mv -f "$f" "$ROOT/dist/"
done
[ -f "$ROOT/dist/$deb" ] || { echo "build-deb: $deb was not built" >&2; exit 1; }
echo "build-deb: dist/$deb ($(du -h "$ROOT/dist/$deb" | cut -f1))"
dpkg-deb -I "$ROOT/dist/$deb" | sed -n '/Package:/,$p'
