#!/bin/bash
# The installers' check (`make check-package`, run by CI after `make test`): the .deb that
# `make package` built is installed into a clean Debian bookworm root (debootstrap --variant=minbase,
# entered with chroot; its tarball is cached in $PARLEY_CHECK_CACHE), and from the installed
# bundle, as root there (PARLEY_CHECK_USER=owner: as a plain user, whose jail is reduced where
# the kernel forbids unprivileged socket filters; see README "Limits"):
#   `parley --version`; two nodes start and pair; a 2-party job runs with the jail's complete
#   confinement at both parties and the same result as the source tree's .venv gives;
#   the app renders one screenshot offscreen; the .desktop file and the metainfo validate
#   (desktop-file-validate, appstreamcli, when present); then the package is purged and
#   nothing but the nodes' data dirs (and the check's own scratch files) is left behind.
# Needs root (chroot, mounts) and network access to a Debian mirror for the first root and
# for the package's dependencies (their .debs are cached too).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
CACHE=${PARLEY_CHECK_CACHE:-/var/cache/parley-check}
MIRROR=${PARLEY_CHECK_MIRROR:-http://deb.debian.org/debian}
DEB=$(ls packaging/dist/parley_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || { echo "check.sh: no packaging/dist/parley_*.deb; run make package" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "check.sh: needs root (chroot and mounts)" >&2; exit 1; }
say() { echo "check.sh: $*"; }
t_start=$(date +%s)

# -- the clean root ---------------------------------------------------------------------------
mkdir -p "$CACHE/archives/partial"
# the host's tools: debootstrap for the root, the validators for the desktop files
missing=""
for tool in debootstrap:debootstrap desktop-file-validate:desktop-file-utils appstreamcli:appstream; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        || say "could not install$missing (validators are skipped when absent)"
fi
if [ ! -f "$CACHE/bookworm-minbase.tar" ]; then
    rm -rf "$CACHE/root.new"
    debootstrap --variant=minbase bookworm "$CACHE/root.new" "$MIRROR" >/dev/null
    tar -C "$CACHE/root.new" -cf "$CACHE/bookworm-minbase.tar.new" .
    mv "$CACHE/bookworm-minbase.tar.new" "$CACHE/bookworm-minbase.tar"
    rm -rf "$CACHE/root.new"
fi
WORK=$(mktemp -d /var/tmp/parley-check.XXXXXX)
ROOT=$WORK/root
cleanup() {
    for p in /proc/[0-9]*; do  # anything still running in the root (nothing should be)
        if [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ]; then kill -9 "${p#/proc/}" 2>/dev/null || true; fi
    done
    for m in var/cache/apt/archives dev sys proc; do
        umount -R -l "$ROOT/$m" 2>/dev/null || true
    done
    if [ -z "${PARLEY_CHECK_KEEP:-}" ]; then rm -rf "$WORK"; else say "kept $WORK"; fi
}
trap cleanup EXIT
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$CACHE/bookworm-minbase.tar"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mount --bind "$CACHE/archives" "$ROOT/var/cache/apt/archives"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$DEB" "$ROOT/root/parley.deb"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
in_root useradd -m -s /bin/sh owner

# -- install: apt brings the dependencies; then the package alone, around a snapshot -----------
t0=$(date +%s)
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    /root/parley.deb >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; exit 1; }
in_root dpkg --purge parley >/dev/null
snapshot() {
    (cd "$ROOT" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \
        -o -path ./var/cache/apt -o -path ./var/lib/apt -o -path ./var/lib/dpkg \
        -o -path ./var/log \) -prune -o -print | sort)
}
snapshot >"$WORK/before.txt"
in_root dpkg -i /root/parley.deb >/dev/null
t1=$(date +%s)
say "installed $(basename "$DEB") ($(du -h "$DEB" | cut -f1)) in a clean bookworm root in $((t1 - t0)) s"
test -x "$ROOT/opt/parley/parley" && test -L "$ROOT/usr/bin/parley"

# -- run it as a user there ------------------------------------------------------------------
CHECK=/home/owner/check
install -d -m 700 "$ROOT$CHECK"
chroot "$ROOT" chown "${PARLEY_CHECK_USER:-root}:" "$CHECK"
# As root there by default: on kernels that refuse SO_ATTACH_FILTER to unprivileged users (this
# CI machine's 6.18 does), a party cannot seal its gloo listeners and the jail reports
# complete: false for any other user; PARLEY_CHECK_USER=owner runs the check as a plain user.
RUN_AS=${PARLEY_CHECK_USER:-root}
RUN_HOME=$(in_root sh -c "getent passwd $RUN_AS | cut -d: -f6")
AS_OWNER="chroot --userspec=$RUN_AS:$RUN_AS $ROOT env -i HOME=$RUN_HOME PATH=/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen"
# every command runs under the unit's hardening (packaging/unit_hardening.py applies it as
# systemd would; no systemd manager runs here): the jail must still be complete under it
HARDENED="python3 $SRC/packaging/unit_hardening.py $ROOT/usr/lib/systemd/user/parley-node.service --"
python3 packaging/check_installed.py --parley "$HARDENED $AS_OWNER /usr/bin/parley" --base "$CHECK" \
    --host-base "$ROOT$CHECK" --data /opt/parley/_internal/resources/bob_features.csv \
    --screenshot --out "$WORK/installed.json"
test -s "$ROOT$CHECK/screenshot.png"
mkdir -p "$WORK/src"
python3 packaging/check_installed.py --parley "$SRC/.venv/bin/parley" --base "$WORK/src" \
    --host-base "$WORK/src" --data "$SRC/resources/bob_features.csv" --out "$WORK/source.json"
python3 - "$WORK/installed.json" "$WORK/source.json" <<'PY'
import json, sys
a, b = (json.load(open(p))["result"] for p in sys.argv[1:])
assert a["sum"] == b["sum"], ("sums differ", a["sum"], b["sum"])
worst = max(abs(x - y) for x, y in zip(a["mean"], b["mean"]))
assert len(a["mean"]) == len(b["mean"]) == 15 and worst < 1e-4, ("means differ", worst)
print(f"check.sh: the installed bundle's result equals the source tree's (sums exactly; "
      f"means within {worst:.1e}, CrypTen's random truncation)")
PY

# -- desktop integration ---------------------------------------------------------------------
DESKTOP=$ROOT/usr/share/applications/org.parley.Parley.desktop
METAINFO=$ROOT/usr/share/metainfo/org.parley.Parley.metainfo.xml
for size in 16 32 48 64 128 256; do test -s "$ROOT/usr/share/icons/hicolor/${size}x$size/apps/org.parley.Parley.png"; done
test -s "$ROOT/usr/share/icons/hicolor/scalable/apps/org.parley.Parley.svg"
test -s "$ROOT/usr/lib/systemd/user/parley-node.service"
if command -v desktop-file-validate >/dev/null; then desktop-file-validate "$DESKTOP"; say "desktop-file-validate: ok"
else say "desktop-file-validate: not installed, skipped"; fi
if command -v appstreamcli >/dev/null; then appstreamcli validate --no-net "$METAINFO" >/dev/null; say "appstreamcli validate: ok"
else say "appstreamcli: not installed, skipped"; fi

# -- uninstall: nothing left but the data dirs -----------------------------------------------
in_root dpkg --purge parley >/dev/null
snapshot >"$WORK/after.txt"
# allowed: the check's dir (the data dirs and its own files) and the font caches fontconfig
# writes for any program that draws text (the app's screenshot)
left=$(comm -13 "$WORK/before.txt" "$WORK/after.txt" \
       | grep -v -e "^\.$CHECK\(/\|$\)" -e "^\./var/cache/fontconfig\(/\|$\)" \
                 -e "^\.$RUN_HOME/\.cache\(/fontconfig\)\?\(/\|$\)" || true)
gone=$(comm -23 "$WORK/before.txt" "$WORK/after.txt" || true)
if [ -n "$left$gone" ]; then
    say "FAILED: after purging, outside the data dirs:"; echo "left: $left"; echo "gone: $gone"; exit 1
fi
test -e "$ROOT$CHECK/alice/identity" && test -e "$ROOT$CHECK/bob/audit.sqlite"
say "purged: nothing left outside the nodes' data dirs (kept: $CHECK/alice, $CHECK/bob)"
say "passed in $(( $(date +%s) - t_start )) s"
