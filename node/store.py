"""The node's asset store: the datasets and models its owner has published.

Metadata lives in SQLite (``store.sqlite``); content lives in files named by the SHA-256 of their
bytes (``blobs/ab/ab12...ef.npy``). Content addressing gives three things at once: identical
content is kept once however often it is imported; a party process can be handed one file that
holds exactly one asset part and nothing else; and a blob's name says what its bytes must be.

Imports are all-or-nothing. Everything that can be refused (a bad cell, an op CrypTen cannot
run) is checked before anything is written. Then, inside one SQLite write transaction, each
blob is written to a temporary file in its final folder, fsynced and renamed into place, and
only after that are the asset's rows inserted and the catalog version bumped. A crash at any
point leaves at most an unreferenced blob or a temporary file, never an asset whose content is
missing; opening the store removes such leftovers. Because blobs are only ever written or
removed while the SQLite write lock is held, that clean-up cannot race an import running in
another process, and removing an asset cannot delete a blob another import is about to claim.

The store checks a model by converting it with CrypTen, once, at import: a model that would
fail inside a job is refused when its owner can still do something about it. A model's schema
carries its architecture (node/architecture.py: the graph without weights), which a job's
proposal states so that every party builds the same graph; a graph too large for a proposal is
refused at import too.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from node.db import connect
from node.errors import DatasetError, ModelError, StoreError, UnknownAsset
from node.files import write_atomic

__all__ = ["KINDS", "TAG_RULE", "Asset", "Store", "is_tag", "normalise_tags"]

logger = logging.getLogger(__name__)

KINDS = ("dataset", "model")

_SCHEMA_VERSION = 1
_TAG_RE = re.compile(r"[a-z0-9][a-z0-9_.:\-]{0,63}")
TAG_RULE = ("1 to 64 characters from lowercase letters, digits, '-', '_', '.' and ':', "
            "beginning with a letter or a digit")


def is_tag(text: object) -> bool:
    """Whether ``text`` is a tag as the store keeps it (the one rule: plans, proposals and
    imports all check with this)."""
    return isinstance(text, str) and _TAG_RE.fullmatch(text) is not None
_BLOB_RE = re.compile(r"[0-9a-f]{64}\.(npy|onnx)")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
# A plain decimal or scientific number. float() alone would also take "nan", "infinity" and
# "1_000", none of which should pass as a data value.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DATASET_PARTS = ("features", "labels")

_DDL = """
CREATE TABLE IF NOT EXISTS assets (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('dataset', 'model')),
    description  TEXT NOT NULL,
    schema       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    content_blob TEXT NOT NULL,
    labels_blob  TEXT
);
CREATE TABLE IF NOT EXISTS tags (
    asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (asset_id, tag)
);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags (tag);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('catalog_version', 0);
"""


@dataclass(frozen=True)
class Asset:
    """One published dataset or model: what the catalog shows, never where its bytes are."""

    id: str
    name: str
    kind: str
    tags: tuple[str, ...]
    description: str
    schema: dict[str, Any] = field(hash=False)  # hashing by the other fields keeps Asset hashable
    created_at: float

    def public(self) -> dict[str, Any]:
        """Metadata that may leave the node: no file paths, no content hashes, no values."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "tags": list(self.tags),
            "description": self.description,
            "schema": json.loads(json.dumps(self.schema)),
            "created_at": self.created_at,
        }


def normalise_tags(tags: Iterable[str] | str) -> tuple[str, ...]:
    """Tags stripped, lowercased, deduplicated and sorted; StoreError for one breaking the rule."""
    if isinstance(tags, str):  # a lone tag, not an iterable of one-letter tags
        tags = (tags,)
    seen: set[str] = set()
    for raw in tags:
        if not isinstance(raw, str):
            raise StoreError(f"tag {raw!r} is not text; a tag is {TAG_RULE}")
        tag = raw.strip().lower()
        if not is_tag(tag):
            raise StoreError(f"tag {raw!r} is not allowed; a tag is {TAG_RULE}, e.g. 'mnist-test'")
        seen.add(tag)
    return tuple(sorted(seen))


@dataclass(frozen=True)
class _Prepared:
    """An import that passed every check and is ready to be written."""

    kind: str
    name: str
    tags: tuple[str, ...]
    description: str
    schema: dict[str, Any]
    content: tuple[bytes | bytearray, str]  # (bytes, extension)
    labels: tuple[bytes | bytearray, str] | None = None


class Store:
    """The asset store of one node's data directory. Safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blobs_dir = self.data_dir / "blobs"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        path = self.data_dir / "store.sqlite"
        self._db: sqlite3.Connection | None = None
        try:
            # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
            self._db = connect(path, timeout=30.0, foreign_keys=True)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"the store in {self.data_dir} was written by a newer Parley "
                    f"(schema {version}); upgrade Parley to open it"
                )
            with self._write() as db:
                for statement in _DDL.split(";"):  # executescript() would commit mid-way
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                self._remove_leftovers(db)
                self._add_architectures(db)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(
                f"cannot open the asset store {path} ({exc}); if the file is damaged, move it "
                "aside and import the assets again"
            ) from exc
        except BaseException:
            self.close()
            raise

    # -- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the asset store is closed")
        return self._db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from its first statement.

        BEGIN IMMEDIATE takes the lock up front, so blob files written inside the block are
        never seen by another process's clean-up before the rows that claim them exist.
        """
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    # -- imports ---------------------------------------------------------------------------

    def import_csv(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        label_column: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Asset:
        """A dataset from a CSV file with a header row and numbers in every other cell.

        ``progress(done, total)`` is called while reading, after every 2 MB or so (bytes of
        the file); it may raise to stop the import, and then nothing is stored.

        The file is read as a stream, straight into the .npy bytes that will be stored, so
        memory stays near the size of the float32 result (a 200 MB file with 30 columns
        peaked at 2.3 GB when it was read whole into Python lists)."""
        path = Path(path)
        table = _read_csv(path, label_column, progress)
        prepared = _dataset(path.stem, name, tags, description, table.columns, table.shape,
                            table.features, table.labels, label_column)
        del table  # the bytes live on in ``prepared`` only
        return self._commit(prepared)

    def import_npy(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
    ) -> Asset:
        """A dataset from a numeric 1-D or 2-D .npy array (1-D becomes one column)."""
        path = Path(path)
        features = _read_npy(path)
        columns = [f"c{i}" for i in range(features.shape[1])]
        return self._commit(
            _dataset(path.stem, name, tags, description, columns, features.shape,
                     _npy_bytes(features), None, None)
        )

    def import_onnx(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
        *,
        name: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
    ) -> Asset:
        """A model from an ONNX file (or its bytes) that CrypTen can convert."""
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            data, label, default_name = bytes(path_or_bytes), "the model", "model"
        else:
            path = Path(path_or_bytes)
            label, default_name = path.name, path.stem
            data = _read_file(path, ModelError, "an .onnx file")
        schema = _check_model(data, label)
        return self._commit(
            _Prepared(
                kind="model",
                name=_clean_name(name, default_name),
                tags=normalise_tags(tags),
                description=_clean_description(description),
                schema=schema,
                content=(data, "onnx"),
            )
        )

    def import_torch(
        self,
        module: Any,
        dummy_input: Any,
        *,
        name: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
    ) -> Asset:
        """A model from a PyTorch module, exported to ONNX the way CrypTen needs it."""
        from node.compat import onnx_bytes_from_pytorch

        try:
            data = onnx_bytes_from_pytorch(module, dummy_input)
        except Exception as exc:  # the exporter raises anything from RuntimeError to KeyError
            raise ModelError(
                f"{type(module).__name__} could not be exported to ONNX ({type(exc).__name__}: "
                f"{_first_line(exc)}); check that dummy_input is a tensor the module accepts"
            ) from exc
        return self.import_onnx(
            data, name=name or type(module).__name__, tags=tags, description=description
        )

    def _commit(self, prepared: _Prepared) -> Asset:
        asset = Asset(
            id="a-" + secrets.token_hex(6),
            name=prepared.name,
            kind=prepared.kind,
            tags=prepared.tags,
            description=prepared.description,
            schema=prepared.schema,
            created_at=time.time(),
        )
        written: list[Path] = []
        try:
            with self._write() as db:
                try:
                    content_blob = self._put_blob(*prepared.content, written)
                    labels = prepared.labels
                    labels_blob = self._put_blob(*labels, written) if labels else None
                    self._insert_asset(db, asset, content_blob, labels_blob)
                    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'")
                except BaseException:
                    # Still under the write lock, so no other import can have claimed them.
                    for blob in written:
                        blob.unlink(missing_ok=True)
                    raise
        except OSError as exc:
            raise StoreError(
                f"could not save {asset.name!r} in {self.blobs_dir} ({exc.strerror or exc}); "
                "check free disk space and permissions, then import it again"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(
                f"could not record {asset.name!r} in {self.data_dir / 'store.sqlite'} ({exc}); "
                "import it again; if this repeats, check that no other program holds the store"
            ) from exc
        logger.info("imported %s %s (%s), tags %s", asset.kind, asset.id, asset.name, asset.tags)
        return asset

    def _insert_asset(
        self, db: sqlite3.Connection, asset: Asset, content_blob: str, labels_blob: str | None
    ) -> None:
        db.execute(
            "INSERT INTO assets (id, name, kind, description, schema, created_at, content_blob, "
            "labels_blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                asset.id,
                asset.name,
                asset.kind,
                asset.description,
                json.dumps(asset.schema, sort_keys=True),
                asset.created_at,
                content_blob,
                labels_blob,
            ),
        )
        db.executemany(
            "INSERT INTO tags (asset_id, tag) VALUES (?, ?)", [(asset.id, t) for t in asset.tags]
        )

    def _blob_path(self, blob: str) -> Path:
        return self.blobs_dir / blob[:2] / blob

    def _put_blob(self, data: bytes, ext: str, written: list[Path]) -> str:
        """Store ``data`` under its hash, atomically; a blob already there is kept as it is.

        Call with the write lock held. A blob under its final name is always complete (it got
        there by rename after fsync), so an existing one needs no rewrite.
        """
        blob = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        final = self._blob_path(blob)
        if final.exists():
            return blob
        final.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(final, data, prefix=_TMP_PREFIX)
        written.append(final)
        return blob

    # -- lookups ---------------------------------------------------------------------------

    def list(self, tags: Iterable[str] = (), kind: str | None = None) -> list[Asset]:
        """Assets carrying all of ``tags`` (and of ``kind``, if given), oldest first."""
        wanted = normalise_tags(tags)
        if kind is not None and kind not in KINDS:
            raise StoreError(f"unknown asset kind {kind!r}; use one of {', '.join(KINDS)}")
        sql = "SELECT * FROM assets WHERE 1"
        args: list[Any] = []
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        for tag in wanted:
            sql += " AND id IN (SELECT asset_id FROM tags WHERE tag = ?)"
            args.append(tag)
        sql += " ORDER BY created_at, id"
        with self._read() as db:
            rows = db.execute(sql, args).fetchall()
            return [self._asset(db, row) for row in rows]

    def get(self, asset_id: str) -> Asset:
        with self._read() as db:
            row = db.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
            if row is None:
                raise UnknownAsset(
                    f"no asset {asset_id!r} on this node; `parley assets` lists what is here"
                )
            return self._asset(db, row)

    def by_tag(self, tag: str) -> Asset:
        """The one asset carrying ``tag``: how a job names the data a party provides."""
        (tag,) = normalise_tags((tag,))
        found = self.list((tag,))
        if not found:
            raise UnknownAsset(
                f"no asset tagged {tag!r} on this node; `parley assets` lists what is here"
            )
        if len(found) > 1:
            ids = ", ".join(a.id for a in found)
            raise StoreError(
                f"{len(found)} assets are tagged {tag!r} ({ids}); "
                "use a more specific tag, or add one that only the intended asset carries"
            )
        return found[0]

    def update(self, asset_id: str, *, name: str | None = None,
               tags: Iterable[str] | None = None, description: str | None = None) -> Asset:
        """Change what the catalog says of an asset (its content never changes)."""
        asset = self.get(asset_id)
        new_tags = normalise_tags(tags) if tags is not None else asset.tags
        with self._write() as db:
            db.execute("UPDATE assets SET name = ?, description = ? WHERE id = ?",
                       (_clean_name(name, asset.name) if name is not None else asset.name,
                        _clean_description(description) if description is not None
                        else asset.description, asset_id))
            db.execute("DELETE FROM tags WHERE asset_id = ?", (asset_id,))
            db.executemany("INSERT INTO tags (asset_id, tag) VALUES (?, ?)",
                           [(asset_id, t) for t in new_tags])
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'")
        return self.get(asset_id)

    def preview(self, asset_id: str, rows: int = 20) -> dict[str, Any]:
        """What the owner sees of their own asset: the first rows, or a model's layers."""
        asset = self.get(asset_id)
        if asset.kind == "model":
            import onnx

            graph = onnx.load_model_from_string(self.model_bytes(asset)).graph
            return {"kind": "model", "inputs": asset.schema.get("inputs", []),
                    "outputs": asset.schema.get("outputs", []),
                    "parameters": asset.schema.get("parameters"),
                    "layers": [{"op": n.op_type, "name": n.name} for n in graph.node]}
        features = self.load_array(asset)[:rows]
        label = asset.schema.get("label")
        columns = list(asset.schema.get("columns", []))
        table = features.tolist()
        if label:
            labels = self.load_array(asset, "labels")[:rows].tolist()
            columns.append(label["name"])
            table = [r + [y] for r, y in zip(table, labels)]
        return {"kind": "dataset", "columns": columns, "rows": table,
                "shape": asset.schema.get("shape"), "label": label["name"] if label else None}

    def catalog_version(self) -> int:
        with self._read() as db:
            return int(
                db.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()[0]
            )

    def _asset(self, db: sqlite3.Connection, row: tuple[Any, ...]) -> Asset:
        asset_id, name, kind, description, schema, created_at = row[:6]
        tags = tuple(
            t
            for (t,) in db.execute(
                "SELECT tag FROM tags WHERE asset_id = ? ORDER BY tag", (asset_id,)
            )
        )
        return Asset(
            id=asset_id,
            name=name,
            kind=kind,
            tags=tags,
            description=description,
            schema=json.loads(schema),
            created_at=created_at,
        )

    # -- content ---------------------------------------------------------------------------

    def content_path(self, asset: Asset, part: str = "features") -> Path:
        """The blob file holding one part of ``asset``, to hand to a party process.

        ``.npy`` for dataset parts (features, labels), ``.onnx`` for models. For a model,
        ``part`` may be left at its default or given as ``"model"``.
        """
        with self._read() as db:
            row = db.execute(
                "SELECT kind, content_blob, labels_blob FROM assets WHERE id = ?", (asset.id,)
            ).fetchone()
        if row is None:
            raise UnknownAsset(
                f"asset {asset.id!r} ({asset.name}) is no longer on this node; "
                "`parley assets` lists what is here"
            )
        kind, content_blob, labels_blob = row
        if kind == "model":
            if part not in ("features", "model"):
                raise StoreError(f"{asset.id} is a model; it has no {part!r} part")
            blob = content_blob
        elif part == "features":
            blob = content_blob
        elif part == "labels":
            if labels_blob is None:
                raise StoreError(
                    f"dataset {asset.id} ({asset.name}) has no labels; import it again with a "
                    "label column to use it for training"
                )
            blob = labels_blob
        else:
            raise StoreError(
                f"unknown dataset part {part!r}; use one of {', '.join(_DATASET_PARTS)}"
            )
        path = self._blob_path(blob)
        if not path.is_file():
            raise StoreError(
                f"the content of {asset.id} ({asset.name}) is missing from {self.blobs_dir}; "
                "remove the asset and import it again"
            )
        return path

    def load_array(self, asset: Asset, part: str = "features") -> np.ndarray:
        """One part of a dataset: features (n, d) or labels (n,), float32."""
        if asset.kind != "dataset":
            raise StoreError(f"{asset.id} ({asset.name}) is a {asset.kind}, not a dataset")
        return np.load(self.content_path(asset, part), allow_pickle=False)

    def model_bytes(self, asset: Asset) -> bytes:
        """The ONNX bytes of a model, exactly as imported."""
        if asset.kind != "model":
            raise StoreError(f"{asset.id} ({asset.name}) is a {asset.kind}, not a model")
        return self.content_path(asset).read_bytes()

    # -- removal and clean-up --------------------------------------------------------------

    def remove(self, asset_id: str) -> None:
        """Forget an asset; its blobs go too unless another asset holds the same content."""
        trashed: list[tuple[Path, Path]] = []
        try:
            with self._write() as db:
                row = db.execute(
                    "SELECT content_blob, labels_blob FROM assets WHERE id = ?", (asset_id,)
                ).fetchone()
                if row is None:
                    raise UnknownAsset(
                        f"no asset {asset_id!r} on this node; `parley assets` lists what is here"
                    )
                db.execute("DELETE FROM assets WHERE id = ?", (asset_id,))
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'")
                for blob in {b for b in row if b}:
                    still_used = db.execute(
                        "SELECT 1 FROM assets WHERE content_blob = ?1 OR labels_blob = ?1 LIMIT 1",
                        (blob,),
                    ).fetchone()
                    path = self._blob_path(blob)
                    if still_used is None and path.exists():
                        # Moved aside, not deleted, until the commit: a failed commit puts it back.
                        trash = path.with_name(_TRASH_PREFIX + blob)
                        os.replace(path, trash)
                        trashed.append((path, trash))
        except BaseException as exc:
            for path, trash in trashed:
                os.replace(trash, path)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(
                    f"could not remove {asset_id} ({exc}); it is still here, try again"
                ) from exc
            raise
        for _, trash in trashed:
            trash.unlink(missing_ok=True)
        logger.info("removed asset %s (%d blob(s) freed)", asset_id, len(trashed))

    def _add_architectures(self, db: sqlite3.Connection) -> None:
        """Give a model imported before schemas carried its architecture one (None when its
        graph is too large for a proposal). Write lock held; once per such model."""
        from node import architecture

        rows = db.execute(
            "SELECT id, schema, content_blob FROM assets WHERE kind = 'model'"
        ).fetchall()
        for asset_id, text, blob in rows:
            schema = json.loads(text)
            if "architecture" in schema:
                continue
            try:
                data = self._blob_path(blob).read_bytes()
            except OSError as exc:
                logger.warning("model %s: cannot read its content to describe its "
                               "architecture (%s)", asset_id, exc)
                continue
            try:
                schema["architecture"] = architecture.of_model(data)
            except ModelError:
                schema["architecture"] = None  # too large: a job cannot carry it
            except Exception as exc:  # noqa: BLE001 - a damaged file: left as it was, said once
                logger.warning("model %s: its content is not a readable ONNX model (%s)",
                               asset_id, type(exc).__name__)
                continue
            db.execute("UPDATE assets SET schema = ? WHERE id = ?",
                       (json.dumps(schema, sort_keys=True), asset_id))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'")

    def _remove_leftovers(self, db: sqlite3.Connection) -> None:
        """Delete temporary files and unclaimed blobs left by a crash. Write lock held."""
        claimed = {
            blob
            for row in db.execute("SELECT content_blob, labels_blob FROM assets")
            for blob in row
            if blob
        }
        removed = 0
        for sub in self.blobs_dir.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                leftover = f.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)) or (
                    _BLOB_RE.fullmatch(f.name) is not None and f.name not in claimed
                )
                if leftover and f.is_file():
                    f.unlink(missing_ok=True)
                    removed += 1
        if removed:
            logger.warning(
                "removed %d file(s) left in %s by an interrupted import", removed, self.blobs_dir
            )


# -- datasets ------------------------------------------------------------------------------


def _dataset(
    stem: str,
    name: str | None,
    tags: Iterable[str],
    description: str,
    columns: list[str],
    shape: tuple[int, int],
    features: bytes | bytearray,
    labels: bytes | bytearray | None,
    label_column: str | None,
) -> _Prepared:
    """A dataset ready to store, from the .npy bytes of its parts."""
    n, d = shape
    schema: dict[str, Any] = {
        "rows": n,
        "shape": [n, d],
        "dtype": "float32",
        "columns": columns,
        "label": None if labels is None else {"name": label_column, "shape": [n]},
    }
    return _Prepared(
        kind="dataset",
        name=_clean_name(name, stem),
        tags=normalise_tags(tags),
        description=_clean_description(description),
        schema=schema,
        content=(features, "npy"),
        labels=None if labels is None else (labels, "npy"),
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    """Deterministic .npy bytes, so equal arrays hash to the same blob."""
    buf = io.BytesIO()
    np.lib.format.write_array(
        buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False
    )
    return buf.getvalue()


def _read_file(path: Path, error: type[StoreError], what: str) -> bytes:
    """An input file's bytes, or ``error`` saying what went wrong and what to do."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder; choose {what}") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror}); check its permissions") from None


def _open_csv(path: Path) -> io.BufferedReader:
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; choose a file") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc.strerror}); check its "
                           f"permissions") from None
    return f


def _not_utf8(path: Path) -> DatasetError:
    """The error for a file that is not UTF-8, naming the line of its first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1  # the line the next chunk starts on
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            held = decoder.getstate()[0]  # a character cut at the previous chunk's end (no \n)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = held + chunk  # what the decoder read; exc.start counts in it
                line += data.count(b"\n", 0, exc.start)
                return DatasetError(
                    f"{path.name} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                    "save the file as UTF-8 CSV and import it again"
                )
            line += chunk.count(b"\n")
    return DatasetError(  # cut off in the middle of a character
        f"{path.name} ends in the middle of a UTF-8 character; save the file as UTF-8 CSV and "
        "import it again"
    )


@dataclass
class _CsvTable:
    """A CSV file read into the .npy bytes of its features (and labels)."""

    columns: list[str]
    shape: tuple[int, int]
    features: bytearray
    labels: bytearray | None


class _NpyBuilder:
    """The bytes of a float32 .npy file, written block by block as rows are read.

    The header is fixed at the end (its shape is known only then); the bytes equal those of
    ``np.save`` for the same array, so equal data still makes the same blob."""

    def __init__(self, columns: int | None) -> None:
        self.columns = columns  # None: a 1-D array (labels)
        self.rows = 0
        self._reserved = len(self._header(0))
        self.data = bytearray(self._reserved)

    def _header(self, rows: int) -> bytes:
        shape = (rows,) if self.columns is None else (rows, self.columns)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        return buf.getvalue()

    def add(self, block: np.ndarray) -> None:
        if block.size:
            self.data += memoryview(np.ascontiguousarray(block, dtype="<f4")).cast("B")
            self.rows += block.shape[0]

    def finish(self) -> bytearray:
        self.data[: self._reserved] = self._header(self.rows)  # a longer header moves the rest
        return self.data


_CSV_CHUNK_CHARS = 1 << 21  # text parsed at once: some 20 MB of Python objects at most
_CSV_BLOCK_CELLS = 1 << 17  # cells parsed at once when ``csv`` reads the records


def _read_csv(
    path: Path, label_column: str | None, progress: Callable[[int, int], None] | None = None
) -> _CsvTable:
    """Features, labels and column names from a CSV file, checked cell by cell.

    Streamed: the text is parsed in chunks of whole lines, each straight into the .npy bytes,
    and ``progress(bytes read, file size)`` is called after each chunk. Chunks of plain
    numbers take a quick path (``_parse_plain``); a chunk it does not take is read by ``csv``
    (``_parse_records``), which also words the errors, and so is the rest of a file once a
    quote appears (a quoted cell may hold a line end)."""
    fname = path.name
    with _open_csv(path) as raw:
        total = os.fstat(raw.fileno()).st_size
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            header, line = _read_header(fname, text, label_column)
            # a file of labels only: its one column is read as features, and is the labels
            only_labels = label_column is not None and header == [label_column]
            at = None if label_column is None or only_labels else header.index(label_column)
            features = _NpyBuilder(len(header) - (at is not None))
            labels = None if at is None else _NpyBuilder(None)
            carry = ""
            while True:
                chunk = text.read(_CSV_CHUNK_CHARS)
                data, carry = _whole_lines(carry + chunk, final=not chunk)
                if '"' in data or '"' in carry:
                    rest = io.StringIO(data + carry + text.readline(), newline="")
                    for table in _parse_records(fname, header, itertools.chain(rest, text), line):
                        _add_table(table, at, features, labels)
                        if progress is not None:
                            progress(raw.tell(), total)
                    break
                table = _parse_plain(data, len(header))
                tables = [table] if table is not None else _parse_records(
                    fname, header, io.StringIO(data, newline=""), line)
                for table in tables:
                    _add_table(table, at, features, labels)
                line += _count_lines(data)
                if not chunk:
                    break
                if progress is not None:
                    progress(raw.tell(), total)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    if not features.rows:
        raise DatasetError(f"{fname} has a header but no data rows; add rows below the header")
    if progress is not None:
        progress(total, total)
    columns = header if at is None else [c for c in header if c != label_column]
    if only_labels:
        values = features.finish()
        return _CsvTable(columns, (features.rows, 1), values,
                         _npy_bytes(np.load(io.BytesIO(values)).reshape(-1)))
    return _CsvTable(columns, (features.rows, len(columns)), features.finish(),
                     None if labels is None else labels.finish())


def _read_header(fname: str, text: io.TextIOWrapper,
                 label_column: str | None) -> tuple[list[str], int]:
    """The header (the first record that is not blank) and the line after it."""
    reader = csv.reader(text, strict=True)
    line = 1
    try:
        for record in reader:
            line = reader.line_num + 1
            if record and not (len(record) == 1 and not record[0].strip()):
                return _check_header(fname, record, label_column), line
    except csv.Error as exc:
        raise DatasetError(f"{fname} line {line}: not valid CSV ({exc}); fix the line") from None
    raise DatasetError(f"{fname} is empty; a dataset needs a header row and at least one data row")


def _whole_lines(text: str, final: bool) -> tuple[str, str]:
    """``text`` cut after its last line end: (whole lines, the rest)."""
    if final:
        return text, ""
    if "\n" in text:
        cut = text.rfind("\n") + 1
    else:  # a classic Mac file ends lines in "\r" alone; a last "\r" may be half of "\r\n"
        cut = text.rfind("\r", 0, len(text) - 1) + 1
    return text[:cut], text[cut:]


def _count_lines(text: str) -> int:
    """Lines as ``csv`` counts them: ended by "\n", "\r" or "\r\n"."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _parse_plain(text: str, columns: int) -> np.ndarray | None:
    """Whole lines of plain numbers as float64 rows, quickly (numpy's C reader); None if
    anything needs ``csv`` or a closer look.

    Only digits, signs, '.', 'e', ',', spaces, tabs and line ends pass: in such text ``csv``
    splits records and cells where numpy does and skips the same empty lines (a line of
    spaces numpy refuses, so ``csv`` reads that chunk), and numpy takes exactly the cells
    ``_parse_cell`` takes (no 'nan' or 'inf' can be spelt), with the same values."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:  # a classic Mac file
            return None
    if text.translate(_PLAIN_TEXT):
        return None
    if not text.strip():
        return np.empty((0, columns))
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=",", comments=None, quotechar=None,
                            dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    if values.shape[1] != columns or not np.isfinite(values).all() or \
            np.abs(values).max() > _FLOAT32_MAX:
        return None
    return values


_PLAIN_TEXT = str.maketrans("", "", "0123456789eE+-., \t\n")  # deletes what plain text holds


def _plain_numbers(text: str) -> bool:
    """Whether ``float`` can be trusted with the cells in ``text``: it takes every cell
    ``_parse_cell`` takes, with the same value, and besides only digit separators ('1_000')
    and non-ASCII digits, ruled out here, and non-finite values, ruled out by ``_numbers``."""
    return text.isascii() and "_" not in text


def _numbers(cells: list[str], rows: int, columns: int) -> np.ndarray | None:
    """Cells that passed ``_plain_numbers`` as float64 rows; None if one needs a closer look
    (not a number, not finite, or past float32)."""
    try:
        values = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
    except ValueError:
        return None
    if values.size and (not np.isfinite(values).all() or np.abs(values).max() > _FLOAT32_MAX):
        return None
    return values.reshape(rows, columns)


def _parse_records(fname: str, header: list[str], lines: Iterable[str],
                   first_line: int) -> Iterator[np.ndarray]:
    """CSV records as float64 tables of a few thousand rows: the reference for what is
    accepted, and where every error is worded, with its line."""
    reader = csv.reader(lines, strict=True)
    rows_per_block = max(1, _CSV_BLOCK_CELLS // len(header))
    block: list[list[str]] = []
    starts: list[int] = []  # the line each record of the block starts on
    line = first_line  # the line the next record starts on
    try:
        for record in reader:
            start, line = line, first_line + reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(header):
                if block:  # a bad cell above this row is the first error
                    _block_table(fname, header, block, starts)
                raise DatasetError(
                    f"{fname} line {start}: expected {len(header)} cells (one per header "
                    f"column), found {len(record)}; fix the row or remove it"
                )
            block.append(record)
            starts.append(start)
            if len(block) >= rows_per_block:
                yield _block_table(fname, header, block, starts)
                block, starts = [], []
    except csv.Error as exc:
        raise DatasetError(f"{fname} line {line}: not valid CSV ({exc}); fix the line") from None
    if block:
        yield _block_table(fname, header, block, starts)


def _block_table(fname: str, header: list[str], block: list[list[str]],
                 starts: list[int]) -> np.ndarray:
    cells = [cell for record in block for cell in record]
    table = _numbers(cells, len(block), len(header)) if _plain_numbers("".join(cells)) else None
    if table is None:  # cell by cell, so that the error names the line, column and value
        table = np.array(
            [[_parse_cell(fname, start, header[i], cell) for i, cell in enumerate(record)]
             for start, record in zip(starts, block)],
            dtype=np.float64,
        )
    return table


def _add_table(table: np.ndarray, at: int | None, features: _NpyBuilder,
               labels: _NpyBuilder | None) -> None:
    if at is None:
        features.add(table)
    else:
        assert labels is not None
        features.add(np.delete(table, at, axis=1))
        labels.add(table[:, at])


def _check_header(fname: str, record: list[str], label_column: str | None) -> list[str]:
    header = [c.strip() for c in record]
    for i, col in enumerate(header):
        if not col:
            raise DatasetError(
                f"{fname} line 1: column {i + 1} has no name; "
                "give every column a name in the header row"
            )
    if len(header) == 1 and ";" in record[0]:
        raise DatasetError(
            f"{fname} line 1 looks separated by ';' rather than ','; save it as comma-separated CSV"
        )
    first: dict[str, int] = {}
    for i, col in enumerate(header):
        if col in first:
            raise DatasetError(
                f"{fname} line 1: column name {col!r} appears twice (columns {first[col] + 1} and "
                f"{i + 1}); rename one of them"
            )
        first[col] = i
    if label_column is not None:
        if label_column not in first:
            raise DatasetError(
                f"{fname} has no column {label_column!r} to use as labels; its columns are: "
                f"{', '.join(header)}"
            )
    return header


def _parse_cell(fname: str, line: int, column: str, cell: str) -> float:
    where = f"{fname} line {line}, column {column!r}"
    text = cell.strip()
    if not text:
        raise DatasetError(
            f"{where}: {cell!r} is an empty cell, not a number; fill it in or remove the row"
        )
    if not _NUMBER_RE.fullmatch(text):
        raw = text.lower().lstrip("+-")
        if raw in ("nan", "inf", "infinity"):
            raise DatasetError(
                f"{where}: {cell!r} is not a finite number; fix the cell or remove the row"
            )
        raise DatasetError(f"{where}: {cell!r} is not a number; fix the cell or remove the row")
    value = float(text)
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise DatasetError(
            f"{where}: {cell!r} is too large for a 32-bit float; scale the column or remove the row"
        )
    return value


def _read_npy(path: Path) -> np.ndarray:
    fname = path.name
    if not path.exists():
        raise DatasetError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; choose a .npy file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) and "Object arrays" in str(exc):
            raise DatasetError(
                f"{fname} holds Python objects (dtype object), which Parley never loads because "
                "unpickling can run code; save a numeric array, "
                "e.g. numpy.save(f, a.astype('float32'))"
            ) from None
        raise DatasetError(
            f"{fname} is not a .npy array file; save one array with numpy.save and import that"
        ) from None
    except (OSError, EOFError):  # truncated header, unreadable file
        raise DatasetError(
            f"{fname} is not a readable .npy file; save one array with numpy.save and import that"
        ) from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DatasetError(
            f"{fname} is an .npz archive; save one array with numpy.save and import that"
        )
    array = loaded
    if array.dtype.names is not None or not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
        or array.dtype == np.bool_
    ):
        raise DatasetError(
            f"{fname} holds {array.dtype} values; a dataset must be integers or real numbers"
        )
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise DatasetError(
            f"{fname} has shape {tuple(array.shape)}; a dataset is 1-D (one column) or 2-D "
            "(rows x columns): reshape it, e.g. a.reshape(len(a), -1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DatasetError(
            f"{fname} has shape {tuple(array.shape)}: no data; it needs rows and columns"
        )
    with np.errstate(over="ignore"):
        features = array.astype(np.float32)
    bad = np.argwhere(~np.isfinite(features))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise DatasetError(
            f"{fname}: {len(bad)} value(s) are NaN, infinite or too large for a 32-bit float, the "
            f"first at row {row}, column {col}; fix or drop them before importing"
        )
    return features


# -- models --------------------------------------------------------------------------------


def _check_model(data: bytes, label: str) -> dict[str, Any]:
    """The model's schema, after making sure CrypTen can run it; ModelError otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    from node import architecture

    not_onnx = (
        f"{label} is not an ONNX model; export it with torch.onnx.export, or import the PyTorch "
        "module itself"
    )
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        raise ModelError(not_onnx) from None
    graph = model.graph
    if model.ir_version <= 0 or not graph.node:
        raise ModelError(not_onnx)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise ModelError(
            f"{label} keeps its weights in separate files; save it as one file "
            "(onnx.save_model(model, path, save_as_external_data=False))"
        )
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"{label} has {len(inputs)} input(s) and {len(graph.output)} output(s); Parley runs "
            "models with exactly one input and one output: combine them in the model before export"
        )
    ops = sorted({node.op_type for node in graph.node})
    _check_crypten(data, ops, label)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {
        "inputs": [_value_schema(v) for v in inputs],
        "outputs": [_value_schema(v) for v in graph.output],
        "ops": ops,
        "parameters": int(sum(math.prod(t.dims) for t in graph.initializer)),
        "opset": int(opset),
        # what a job's proposal carries so that every party builds the same graph
        "architecture": architecture.of_model(data, label),
    }


def _value_schema(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape: list[int | None] | None = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape}


def _check_crypten(data: bytes, ops: list[str], label: str) -> None:
    from node.compat import crypten

    converter = crypten.nn.onnx_converter  # as patched by node.compat

    unsupported = []
    for op in ops:
        if op == "Identity":  # node.compat rewires these away before conversion
            continue
        try:
            converter._get_operator_class(op, {})
        except ValueError:
            unsupported.append(op)
    if unsupported:
        raise ModelError(_unsupported_message(label, unsupported))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crypten.nn.from_onnx(io.BytesIO(data))
    except Exception as exc:  # CrypTen signals with ValueError, AssertionError, KeyError, ...
        found = re.findall(r"does not support ONNX op (\S+?)\.?$", str(exc))
        if found:
            raise ModelError(_unsupported_message(label, found)) from exc
        raise ModelError(
            f"CrypTen cannot convert {label} ({type(exc).__name__}: {_first_line(exc)}); "
            "re-export it with torch.onnx.export from a model built of supported layers "
            "(Linear, Conv, ReLU, pooling, BatchNorm, ...)"
        ) from exc


def _unsupported_message(label: str, ops: list[str]) -> str:
    plural = "s" if len(ops) > 1 else ""
    return (
        f"CrypTen cannot run {label}: it uses the ONNX op{plural} {', '.join(ops)}, which CrypTen "
        "does not support; replace those layers with supported ones (e.g. ReLU or Sigmoid for "
        "other activations) or export the model with supported ops only"
    )


# -- small helpers -------------------------------------------------------------------------


def _clean_name(name: str | None, default: str) -> str:
    cleaned = (name if name is not None else default).strip()
    if not cleaned:
        raise StoreError("an asset needs a name; pass name=...")
    return cleaned


def _clean_description(description: str) -> str:
    if not isinstance(description, str):
        raise StoreError("the description must be text")
    return description.strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
