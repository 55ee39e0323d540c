"""The one executable of the bundle (PyInstaller): ``parley COMMAND ...`` is node/cli.py.

Parley starts its own helper processes as ``sys.executable -m MODULE ...`` (a party:
``-m node.party``; the app: ``-m gui``; the watchable demo, the bench chart). In the bundle
``sys.executable`` is this program, so ``parley -m MODULE ARGS`` runs that module as
``__main__`` from the bundle, exactly as ``python -m MODULE ARGS`` does in a source tree: the
party process starts from the bundle itself, never from a system Python.
"""

import runpy
import sys


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [sys.executable, *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from node.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
