"""Render resources/icons/app.svg to the hicolor PNG sizes with Qt (offscreen):
``python packaging/render_icons.py OUT_DIR`` writes OUT_DIR/SIZExSIZE/apps/ID.png."""

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def main(out: str, app_id: str) -> None:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841
    svg = os.path.join(os.path.dirname(__file__), "..", "resources", "icons", "app.svg")
    renderer = QSvgRenderer(svg)
    if not renderer.isValid():
        raise SystemExit(f"cannot read {svg}")
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        folder = os.path.join(out, f"{size}x{size}", "apps")
        os.makedirs(folder, exist_ok=True)
        if not image.save(os.path.join(folder, f"{app_id}.png")):
            raise SystemExit(f"cannot write {folder}/{app_id}.png")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
