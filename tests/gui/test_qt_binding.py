"""The Qt binding itself: PySide6 6.12.0 on Python 3.11 dropped a reference to None on every
void Qt call, and a long session aborted ("none_dealloc"); pyproject.toml keeps it out."""

from __future__ import annotations

import gc
import sys

from PySide6.QtWidgets import QLabel


def test_void_qt_calls_keep_the_reference_count_of_none(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(1000):
        label.setText("x")
        label.setVisible(False)
        label.resize(3, 3)
    gc.collect()
    assert abs(sys.getrefcount(None) - before) < 100
