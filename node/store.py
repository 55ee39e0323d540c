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

Reading a dataset file is node/datasets.py's; checking a model, node/models.py's. The store
checks a model by converting it with CrypTen, once, at import: a model that would
fail inside a job is refused when its owner can still do something about it. A model's schema
carries its architecture (node/architecture.py: the graph without weights), which a job's
proposal states so that every party builds the same graph; a graph too large for a proposal is
refused at import too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from node.datasets import npy_bytes, read_csv, read_file, read_npy
from node.db import connect, off_loop
from node.errors import ModelError, StoreError, UnknownAsset, first_line
from node.files import write_atomic
from node.models import check_model
from node.parsing import load_npy
from node.privacy import DEFAULT_MIN_ROWS, check_dp, check_min_rows
from node.privacy import settings_of as privacy_settings

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
        min_rows: int = DEFAULT_MIN_ROWS,
        dp: dict[str, Any] | None = None,
    ) -> Asset:
        """A dataset from a CSV file with a header row and numbers in every other cell.

        ``progress(done, total)`` is called while reading, after every 2 MB or so (bytes of
        the file); it may raise to stop the import, and then nothing is stored.

        The file is read as a stream, straight into the .npy bytes that will be stored, so
        memory stays near the size of the float32 result (a 200 MB file with 30 columns
        peaked at 2.3 GB when it was read whole into Python lists)."""
        path = Path(path)
        table = read_csv(path, label_column, progress)
        prepared = _dataset(path.stem, name, tags, description, table.columns, table.shape,
                            table.features, table.labels, label_column, min_rows, dp)
        del table  # the bytes live on in ``prepared`` only
        return self._commit(prepared)

    def import_npy(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        min_rows: int = DEFAULT_MIN_ROWS,
        dp: dict[str, Any] | None = None,
    ) -> Asset:
        """A dataset from a numeric 1-D or 2-D .npy array (1-D becomes one column)."""
        path = Path(path)
        features = read_npy(path)
        columns = [f"c{i}" for i in range(features.shape[1])]
        return self._commit(
            _dataset(path.stem, name, tags, description, columns, features.shape,
                     npy_bytes(features), None, None, min_rows, dp)
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
            data = read_file(path, ModelError, "an .onnx file")
        schema = check_model(data, label)
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
                f"{first_line(exc)}); check that dummy_input is a tensor the module accepts"
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

    def _put_blob(self, data: bytes | bytearray, ext: str, written: list[Path]) -> str:
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

    @off_loop
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

    @off_loop
    def get(self, asset_id: str) -> Asset:
        with self._read() as db:
            row = db.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
            if row is None:
                raise UnknownAsset(
                    f"no asset {asset_id!r} on this node; `parley assets` lists what is here"
                )
            return self._asset(db, row)

    @off_loop
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
               tags: Iterable[str] | None = None, description: str | None = None,
               privacy: dict[str, Any] | None = None) -> Asset:
        """Change what the catalog says of an asset (its content never changes).
        ``privacy``: a dataset's ``min_rows`` and/or ``dp`` (node/privacy.py); a ``dp`` of
        None turns differential privacy off."""
        asset = self.get(asset_id)
        new_tags = normalise_tags(tags) if tags is not None else asset.tags
        schema = asset.schema
        if privacy is not None:
            if asset.kind != "dataset":
                raise StoreError(f"{asset.name} is a model: privacy settings are a dataset's")
            unknown = set(privacy) - {"min_rows", "dp"}
            if unknown:
                raise StoreError(f"privacy takes min_rows and dp, not {sorted(unknown)[0]!r}")
            now = privacy_settings(schema)
            schema = {**schema, "privacy": _privacy(
                privacy.get("min_rows", now["min_rows"]),
                privacy["dp"] if "dp" in privacy else now["dp"], schema["shape"][1])}
        with self._write() as db:
            db.execute("UPDATE assets SET name = ?, description = ?, schema = ? WHERE id = ?",
                       (_clean_name(name, asset.name) if name is not None else asset.name,
                        _clean_description(description) if description is not None
                        else asset.description, json.dumps(schema), asset_id))
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

    @off_loop
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
        return load_npy(self.content_path(asset, part))

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
    min_rows: int = DEFAULT_MIN_ROWS,
    dp: dict[str, Any] | None = None,
) -> _Prepared:
    """A dataset ready to store, from the .npy bytes of its parts."""
    n, d = shape
    schema: dict[str, Any] = {
        "rows": n,
        "shape": [n, d],
        "dtype": "float32",
        "columns": columns,
        "label": None if labels is None else {"name": label_column, "shape": [n]},
        "privacy": _privacy(min_rows, dp, d),
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


# -- small helpers -------------------------------------------------------------------------


def _privacy(min_rows: Any, dp: Any, columns: int) -> dict[str, Any]:
    return {"min_rows": check_min_rows(min_rows), "dp": check_dp(dp, columns)}


def _clean_name(name: str | None, default: str) -> str:
    cleaned = (name if name is not None else default).strip()
    if not cleaned:
        raise StoreError("an asset needs a name; pass name=...")
    return cleaned


def _clean_description(description: str) -> str:
    if not isinstance(description, str):
        raise StoreError("the description must be text")
    return description.strip()
