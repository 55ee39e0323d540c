#!/bin/sh
# `make package`: the PyInstaller bundle, the .deb and the tarball, into packaging/dist/.
#   packaging/dist/parley/                          the one-folder bundle (`parley` executable)
#   packaging/dist/parley_VERSION_ARCH.deb          /opt/parley, /usr/bin/parley, desktop files
#   packaging/dist/parley-VERSION-linux-ARCH.tar.gz the bundle, the same files, install-user.sh
# PARLEY_SKIP_BUNDLE=1 reuses an existing dist/parley (to rebuild only the packages).
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
APP_ID=org.parley.Parley
DIST=packaging/dist
WORK=packaging/build
VERSION=$($PY -c 'from node import __version__; print(__version__)')
ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
t0=$(date +%s)

if [ "${PARLEY_SKIP_BUNDLE:-}" != 1 ] || [ ! -x "$DIST/parley/parley" ]; then
    rm -rf "$DIST/parley" "$WORK/parley"
    (cd packaging && ../$PY -m PyInstaller --noconfirm --log-level WARN \
        --distpath dist --workpath build parley.spec)
fi
# no build leftovers, no CUDA, no test data in what is shipped
find "$DIST/parley" -name __pycache__ -type d -prune -exec rm -rf {} +
bad=$(find "$DIST/parley" \( -name 'libcu*.so*' -o -name 'libnccl*' -o -name 'libnv*.so*' \
      -o -name 'lib*_cuda*.so*' -o -path '*/nvidia/*' -o -path '*/triton/*' \
      -o -path '*/torch/test/*' -o -path '*/torch/include/*' -o -name '*.pyi' \) | head -n 5)
if [ -n "$bad" ]; then echo "build.sh: the bundle carries what it must not:" >&2; echo "$bad" >&2; exit 1; fi
t1=$(date +%s)
echo "bundle: $(du -sh "$DIST/parley" | cut -f1) in $((t1 - t0)) s"

# the files beside the bundle, as installed under /usr (the tarball's share/ has the same)
SHARE=$WORK/share
rm -rf "$SHARE"
mkdir -p "$SHARE/applications" "$SHARE/metainfo" "$SHARE/icons/hicolor/scalable/apps" \
         "$SHARE/systemd/user"
cp packaging/parley.desktop "$SHARE/applications/$APP_ID.desktop"
cp packaging/$APP_ID.metainfo.xml "$SHARE/metainfo/"
cp resources/icons/app.svg "$SHARE/icons/hicolor/scalable/apps/$APP_ID.svg"
QT_QPA_PLATFORM=offscreen $PY packaging/render_icons.py "$SHARE/icons/hicolor" "$APP_ID"
cp packaging/parley-node.service "$SHARE/systemd/user/"

# .deb: /opt/parley (the bundle), /usr/bin/parley, /usr/share/..., /usr/lib/systemd/user/
DEB=$WORK/deb
rm -rf "$DEB"
mkdir -p "$DEB/DEBIAN" "$DEB/opt" "$DEB/usr/bin" "$DEB/usr/lib/systemd/user" \
         "$DEB/usr/share/doc/parley"
cp -a "$DIST/parley" "$DEB/opt/parley"
cp README.md "$DEB/opt/parley/README.md"
ln -s ../../opt/parley/parley "$DEB/usr/bin/parley"
cp -a "$SHARE/applications" "$SHARE/metainfo" "$SHARE/icons" "$DEB/usr/share/"
cp "$SHARE/systemd/user/parley-node.service" "$DEB/usr/lib/systemd/user/"
cp resources/LICENSE-data.md "$DEB/usr/share/doc/parley/"
printf 'Parley %s\nLicense: MIT. Demo data: see LICENSE-data.md.\n' "$VERSION" \
    > "$DEB/usr/share/doc/parley/copyright"
SIZE_KB=$(du -sk --exclude=DEBIAN "$DEB" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE_KB/" \
    packaging/debian/control > "$DEB/DEBIAN/control"
for script in postinst prerm; do
    install -m 755 packaging/debian/$script "$DEB/DEBIAN/$script"
done
DEBFILE=$DIST/parley_${VERSION}_${ARCH}.deb
# gzip -1: fast to build (zstd is smaller but older dpkg cannot read it)
dpkg-deb --root-owner-group -Zgzip -z1 --build "$DEB" "$DEBFILE" >/dev/null
t2=$(date +%s)
echo "deb: $DEBFILE $(du -h "$DEBFILE" | cut -f1) in $((t2 - t1)) s"

# tarball: parley-VERSION-linux-ARCH/{parley/, share/, install-user.sh, README.md}
NAME=parley-$VERSION-linux-$ARCH
TAR=$WORK/tar/$NAME
rm -rf "$WORK/tar"
mkdir -p "$TAR"
cp -a "$DIST/parley" "$TAR/parley"
cp -a "$SHARE" "$TAR/share"
cp README.md "$TAR/parley/README.md"
install -m 755 packaging/install-user.sh "$TAR/install-user.sh"
cp README.md "$TAR/README.md"
tar -C "$WORK/tar" -cf - "$NAME" | gzip -1 > "$DIST/$NAME.tar.gz"
t3=$(date +%s)
echo "tarball: $DIST/$NAME.tar.gz $(du -h "$DIST/$NAME.tar.gz" | cut -f1) in $((t3 - t2)) s"
echo "make package: $((t3 - t0)) s in all"
