"""Parley's exceptions: one root, one branch per concern.

::

    ParleyError                 anything Parley refuses or cannot do, with a message for people
    +-- StoreError              assets: import, lookup, content
    |   +-- DatasetError        a dataset file that cannot be read (line/column in the message)
    |   +-- ModelError          a model CrypTen cannot run (the unsupported op in the message)
    |   +-- UnknownAsset        no asset with that id or tag
    +-- ProposalError           a malformed or unsatisfiable job proposal
    +-- JobStateError           an action that the job's current state does not allow
    +-- UnknownJob              no job with that id on this node
    +-- JobFailed               a job ended failed or cancelled (the reason in the message)
    +-- NodeUnreachable         a node did not answer (address in the message)
    +-- Forbidden               an authenticated peer asked for what is not theirs

Every message says what happened and what to do next. HTTP handlers turn these into RFC 9457
problem details with a stable ``type`` (see ``ParleyError.problem_type``).
"""

from __future__ import annotations


class ParleyError(Exception):
    """Root of every error Parley reports to a person."""

    problem_type = "about:blank"
    http_status = 400

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class StoreError(ParleyError):
    problem_type = "https://parley.example/problems/store"


class DatasetError(StoreError):
    problem_type = "https://parley.example/problems/bad-dataset"
    http_status = 422


class ModelError(StoreError):
    problem_type = "https://parley.example/problems/bad-model"
    http_status = 422


class UnknownAsset(StoreError):
    problem_type = "https://parley.example/problems/unknown-asset"
    http_status = 404


class ProposalError(ParleyError):
    problem_type = "https://parley.example/problems/bad-proposal"
    http_status = 422


class JobStateError(ParleyError):
    problem_type = "https://parley.example/problems/job-state"
    http_status = 409


class Forbidden(ParleyError):
    """An authenticated peer asked for something that is not theirs."""

    problem_type = "https://parley.example/problems/forbidden"
    http_status = 403


class UnknownJob(ParleyError):
    problem_type = "https://parley.example/problems/unknown-job"
    http_status = 404


class JobFailed(ParleyError):
    problem_type = "https://parley.example/problems/job-failed"
    http_status = 409


class NodeUnreachable(ParleyError):
    problem_type = "https://parley.example/problems/node-unreachable"
    http_status = 502
