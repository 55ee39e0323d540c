"""Parley's exceptions: one root, one branch per concern.

::

    ParleyError                 anything Parley refuses or cannot do, with a message for people
    +-- StoreError              assets: import, lookup, content
    |   +-- DatasetError        a dataset file that cannot be read (line/column in the message)
    |   +-- ModelError          a model CrypTen cannot run (the unsupported op in the message)
    |   +-- UnknownAsset        no asset with that id or tag
    +-- ProposalError           a malformed or unsatisfiable job proposal
    |   +-- BudgetSpent         a dataset's differential-privacy budget would be overspent
    +-- JobStateError           an action that the job's current state does not allow
    +-- UnknownJob              no job with that id on this node
    +-- JobFailed               a job ended failed or cancelled (the reason in the message)
    +-- NodeUnreachable         a node did not answer (address in the message)
    +-- Forbidden               an authenticated peer asked for what is not theirs
    +-- UnknownPeer             no peer with that name or node id
    +-- PairingError            a pairing request that cannot go on (expired, refused, ...)
    +-- AuditError              an audit entry that cannot be written, or a log not read
    +-- ImportCancelled         the owner cancelled an asset import
    +-- NodeBusy                another node already runs on this data dir
    +-- DiskFull                the disk holding the data dir is full (where, in the message)
    +-- BenchError              parley bench could not measure what it was asked to
    |   +-- NativeRunError      a plain CrypTen party of the bench failed, hung or never met
    +-- IdentityError           the node's key file cannot be used as it is
    +-- AuthError               a peer request this node will not act on (an AuthReason)
    +-- PinMismatch             a peer's TLS certificate is not the one paired with
    +-- JailRejected            job source that breaks a static rule (line and rule)
    +-- JailViolation           a job that reached for what the runtime jail does not allow
    +-- JobApiError             a job that asked for what its proposal does not bind
    +-- WireError               a value that cannot travel as JSON
        +-- JsonTooDeep         JSON nested deeper than a node reads

Every subclass is declared here, so that ``error_from_problem`` gives a client the specific
exception for each problem type a node answers with.

Every message says what happened and what to do next. HTTP handlers turn these into RFC 9457
problem details with a stable ``type`` (see ``ParleyError.problem_type``).
"""

from __future__ import annotations

import enum
import ssl
from typing import Any

__all__ = ["AuditError", "AuthError", "AuthReason", "BenchError", "BudgetSpent", "DatasetError",
           "DiskFull", "Forbidden", "IdentityError", "ImportCancelled", "JailRejected",
           "JailViolation", "JobApiError", "JobFailed", "JobStateError", "JsonTooDeep",
           "ModelError", "NativeRunError", "NodeBusy", "NodeUnreachable", "PairingError",
           "ParleyError", "PinMismatch", "ProposalError", "StoreError", "UnknownAsset",
           "UnknownJob", "UnknownPeer", "WireError", "error_from_problem", "first_line"]

_BY_PROBLEM_TYPE: dict[str, type[ParleyError]] = {}


class ParleyError(Exception):
    """Root of every error Parley reports to a person."""

    problem_type = "about:blank"
    http_status = 400

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.problem_type != "about:blank":
            _BY_PROBLEM_TYPE.setdefault(cls.problem_type, cls)

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


class BudgetSpent(ProposalError):
    problem_type = "https://parley.example/problems/budget-spent"
    http_status = 409


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


class UnknownPeer(ParleyError):
    problem_type = "https://parley.example/problems/unknown-peer"
    http_status = 404


class PairingError(ParleyError):
    problem_type = "https://parley.example/problems/pairing"
    http_status = 409


class AuditError(ParleyError):
    """An audit entry that cannot be written, or a log that cannot be read."""

    problem_type = "https://parley.example/problems/audit"
    http_status = 500


class ImportCancelled(ParleyError):
    problem_type = "https://parley.example/problems/import-cancelled"
    http_status = 409


class NodeBusy(ParleyError):
    """Another node process holds this data dir."""

    problem_type = "https://parley.example/problems/node-busy"
    http_status = 409


class DiskFull(ParleyError):
    """A write failed for want of space (ENOSPC, a quota, SQLite's SQLITE_FULL)."""

    problem_type = "https://parley.example/problems/disk-full"
    http_status = 507


class BenchError(ParleyError):
    """``parley bench`` could not measure what it was asked to (the reason in the message)."""

    problem_type = "https://parley.example/problems/bench"
    http_status = 500


class NativeRunError(BenchError):
    """A native (plain CrypTen) party of the benchmark failed, hung, or never met the others."""

    problem_type = "https://parley.example/problems/bench-native-run"
    http_status = 500


class IdentityError(ParleyError):
    """The node's key file cannot be used as it is."""

    problem_type = "https://parley.example/problems/identity"
    http_status = 500


class AuthReason(enum.StrEnum):
    """Why a peer request was refused: stable codes for problem details and tests."""

    UNSIGNED = "unsigned"  # one or more X-Parley-* headers are missing
    MALFORMED = "malformed"  # a header that does not parse
    KEY_MISMATCH = "key-mismatch"  # the key is not the one the node id names
    UNKNOWN_NODE = "unknown-node"  # a valid signer that this node has not paired with
    CERT_MISMATCH = "cert-mismatch"  # signed with one key, TLS client certificate of another
    FORGED = "forged"  # the signature does not verify
    WRONG_RECIPIENT = "wrong-recipient"  # signed for another node
    EXPIRED = "expired"  # signed too long ago (or before this node started)
    FUTURE = "future"  # signed too far ahead: the sender's clock is wrong
    REPLAYED = "replayed"  # this nonce was already used
    BUSY = "busy"  # the nonce cache is full: too many signed requests at once


class AuthError(ParleyError):
    """A peer request this node will not act on; ``reason`` is an ``AuthReason``."""

    problem_type = "https://parley.example/problems/unauthorized"
    http_status = 401

    reason: str = ""  # an AuthReason; empty when rebuilt from a problem document

    def __init__(self, message: str, reason: AuthReason) -> None:
        super().__init__(message)
        self.reason = reason


class PinMismatch(ParleyError, ssl.SSLCertVerificationError):
    """The peer answered with a TLS certificate other than the one paired with.

    Raised inside the TLS handshake, so nothing of the request is sent. aiohttp reports it as
    ``aiohttp.ClientConnectorCertificateError`` whose ``certificate_error`` is this exception.
    """

    problem_type = "https://parley.example/problems/peer-mismatch"
    http_status = 502

class JailRejected(ParleyError):
    """The job's source breaks a static rule: ``line``, stable ``rule`` id, ``detail`` for people.

    ``str()`` reads ``line 3: rule 'no-underscore': `x.__class__` — names and attributes
    starting with '_' are not allowed``.
    """

    problem_type = "https://parley.example/problems/jail-rejected"
    line = 0  # these three are empty when rebuilt from a problem document
    rule = ""
    detail = ""
    http_status = 422

    def __init__(self, line: int, rule: str, message: str) -> None:
        self.line = line
        self.rule = rule
        self.detail = message
        super().__init__(f"line {line}: rule '{rule}': {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.line, self.rule, self.detail))

class JailViolation(ParleyError):
    """The job reached for something the jail does not allow."""

    problem_type = "https://parley.example/problems/jail-violation"

class JobApiError(ParleyError):
    """The job asked for something its proposal does not allow or bind."""

class WireError(ParleyError):
    """A value that cannot travel as JSON (an encrypted tensor, an arbitrary object)."""


class JsonTooDeep(WireError):
    """A JSON text nested deeper than a node reads (a request built to exhaust the stack)."""

    problem_type = "https://parley.example/problems/json-too-deep"
    http_status = 400


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): what a
    message for people quotes of a library's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_from_problem(document: object, status: int = 0) -> ParleyError:
    """The specific exception an RFC 9457 problem document stands for (the client's side of
    ``ParleyError.problem_type``); ParleyError itself for a type this side does not know."""
    doc = document if isinstance(document, dict) else {}
    detail = str(doc.get("detail") or doc.get("title") or f"the node answered HTTP {status}")
    cls = _BY_PROBLEM_TYPE.get(str(doc.get("type", "")), ParleyError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, detail)
    exc.status = status  # type: ignore[attr-defined]
    return exc
