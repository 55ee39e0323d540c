#!/bin/sh
# Install Parley for this user only, without root: the bundle under ~/.local/lib/parley, the
# command ~/.local/bin/parley, the desktop entry, icons and metainfo under ~/.local/share, and
# the systemd user unit parley-node.service (enabled and started when systemd runs here).
#   ./install-user.sh              install, or upgrade in place (a running node is restarted)
#   ./install-user.sh --uninstall  remove all of it; the node's data dir is left alone
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-$HOME/.local}
SHARE=${XDG_DATA_HOME:-$PREFIX/share}
UNITS=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
APP_ID=org.parley.Parley
LIB=$PREFIX/lib/parley

have_systemd() { command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; }

if [ "${1:-}" = "--uninstall" ]; then
    if have_systemd; then systemctl --user disable --now parley-node.service 2>/dev/null || true; fi
    rm -rf "$LIB"
    rm -f "$PREFIX/bin/parley" "$SHARE/applications/$APP_ID.desktop" \
          "$SHARE/metainfo/$APP_ID.metainfo.xml" "$UNITS/parley-node.service" \
          "$SHARE/icons/hicolor/scalable/apps/$APP_ID.svg"
    for png in "$SHARE"/icons/hicolor/*/apps/$APP_ID.png; do rm -f "$png"; done
    if have_systemd; then systemctl --user daemon-reload || true; fi
    echo "Parley removed; its data dir (${PARLEY_DATA_DIR:-$SHARE/parley}) is kept."
    exit 0
fi

mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$SHARE/applications" "$SHARE/metainfo" "$UNITS"
# the new bundle beside the old one, then swapped in: a half-copied bundle never runs
rm -rf "$LIB.new"
cp -a "$HERE/parley" "$LIB.new"
rm -rf "$LIB.old"
if [ -d "$LIB" ]; then mv "$LIB" "$LIB.old"; fi
mv "$LIB.new" "$LIB"
rm -rf "$LIB.old"
ln -sfn "$LIB/parley" "$PREFIX/bin/parley"
sed "s|^Exec=parley |Exec=$PREFIX/bin/parley |" "$HERE/share/applications/$APP_ID.desktop" \
    > "$SHARE/applications/$APP_ID.desktop"
cp "$HERE/share/metainfo/$APP_ID.metainfo.xml" "$SHARE/metainfo/"
(cd "$HERE/share" && find icons -type f) | while read -r icon; do
    mkdir -p "$SHARE/$(dirname "$icon")"
    cp "$HERE/share/$icon" "$SHARE/$icon"
done
sed -e "s|^ExecStart=/usr/bin/parley |ExecStart=$PREFIX/bin/parley |" \
    -e "s|file:///opt/parley/|file://$LIB/|" \
    "$HERE/share/systemd/user/parley-node.service" > "$UNITS/parley-node.service"

echo "Parley $("$PREFIX/bin/parley" --version | cut -d' ' -f2) installed in $LIB"
if have_systemd; then
    systemctl --user daemon-reload
    systemctl --user enable parley-node.service
    # an upgrade: the running node restarts on the new bundle (its data dir is kept)
    systemctl --user restart parley-node.service
    echo "parley-node.service enabled and started (systemctl --user status parley-node)"
else
    echo "no systemd user session here: start the node with '$PREFIX/bin/parley node'"
fi
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "note: add $PREFIX/bin to your PATH" ;; esac
