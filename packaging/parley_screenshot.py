"""``parley -m parley_screenshot DATA_DIR OUT.png``: the app, as ``parley gui`` opens it on the
node of DATA_DIR, rendered offscreen to one PNG once the node's status has loaded (the
installed bundle's check, packaging/check.sh). Prints the seconds from process start to the
window shown and to the status loaded."""

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def process_age() -> float:
    """Seconds since this process started (Linux /proc; the bundle's own start included)."""
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> int:
    started = time.monotonic() - process_age()
    data_dir, out = argv
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.client import NodeConnection
    from gui.main_window import MainWindow
    from gui.style import app_icon

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Parley")
    app.setWindowIcon(app_icon())
    conn = NodeConnection(data_dir)
    settings = QSettings(os.path.join(os.path.dirname(os.path.abspath(out)), "gui.ini"),
                         QSettings.Format.IniFormat)
    window = MainWindow(conn, settings=settings)
    loaded: list[dict] = []
    window.sig_status_loaded.connect(loaded.append)
    window.resize(1180, 760)
    window.show()
    app.processEvents()
    shown = time.monotonic() - started
    window.attach()
    deadline = time.monotonic() + 30
    while not loaded and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    ready = time.monotonic() - started
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    ok = bool(loaded) and window.grab().save(out)
    print(f"window shown {shown:.2f}s, node status loaded {ready:.2f}s, screenshot "
          f"{'saved' if ok else 'FAILED'}: {out}", flush=True)
    conn.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
