"""node: the headless Parley node (store, jobs, jail, trust, APIs)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parley")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
