"""The jail: static checks on job source, the restricted job API, the sandboxed party process.

Its layers, numbered as the README numbers them: 1, the owner's review (node/review.py; no
code here); 2, ``static`` (static.py, the job's source checked before it runs); 3, ``runtime``
(runtime.py and job_api.py, the restricted API the job is compiled against, reveals counted);
4, ``os`` (lockdown.py, the party process locked down). Real jobs run with 2-4 all on; only
tests take one away, to show that the others hold.
"""

ALL_LAYERS = {"static": True, "runtime": True, "os": True}

__all__ = ["ALL_LAYERS"]
