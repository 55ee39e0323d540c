"""The jail: static checks on job source, the restricted job API, the sandboxed party process.

Its three layers, each meant to hold on its own: ``static`` (node/jail/static.py, the job's
source checked before it runs), ``runtime`` (node/jail/runtime.py, the restricted API the job
is compiled against, reveals counted) and ``os`` (node/jail/lockdown.py, the party process
locked down). Real jobs run with all three; only tests take one away, to show the others hold.
"""

ALL_LAYERS = {"static": True, "runtime": True, "os": True}

__all__ = ["ALL_LAYERS"]
