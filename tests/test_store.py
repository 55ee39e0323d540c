"""The asset store: what an owner imports is what a job gets, bad files are refused with a
message that says where and what to do, and a crash never leaves half an asset."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from node import architecture
from node.compat import onnx_bytes_from_pytorch
from node.errors import DatasetError, ModelError, StoreError, UnknownAsset
from node.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def blob_files(store: Store) -> list[Path]:
    return sorted(p for p in store.blobs_dir.rglob("*") if p.is_file())


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.fixture(scope="module")
def mlp_onnx() -> bytes:
    return onnx_bytes_from_pytorch(mlp(), torch.randn(1, 4))


def hand_built(ops: list[str], n_inputs: int = 1) -> bytes:
    """A float model x -> op -> op ... -> y, built node by node."""
    inputs = [
        helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [None, 3])
        for i in range(n_inputs)
    ]
    nodes, inits, prev = [], [], [v.name for v in inputs]
    for i, op in enumerate(ops):
        out = f"t{i}"
        if op == "TopK":
            inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "k"))
            nodes.append(helper.make_node(op, [prev[0], "k"], [out, f"idx{i}"]))
        else:
            nodes.append(helper.make_node(op, prev, [out]))
        prev = [out]
    output = helper.make_tensor_value_info(prev[0], TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# -- CSV -----------------------------------------------------------------------------------


def test_csv_round_trip_keeps_values_columns_and_label_apart(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "bob.csv",
        "age, income ,label,score\n"
        "31, 1e3, 1, -0.5\n"
        "\n"  # a blank line is skipped, not an error
        "47,2.5E-2,0,+7\n",
    )
    asset = store.import_csv(path, tags=["Bob-Data ", "demo"], label_column="label")

    assert asset.name == "bob"
    assert asset.kind == "dataset"
    assert asset.tags == ("bob-data", "demo")
    features = store.load_array(asset)
    labels = store.load_array(asset, "labels")
    assert features.dtype == np.float32 and labels.dtype == np.float32
    np.testing.assert_array_equal(
        features, np.array([[31, 1000, -0.5], [47, 0.025, 7]], np.float32)
    )
    np.testing.assert_array_equal(labels, np.array([1, 0], np.float32))
    assert asset.schema == {
        "rows": 2,
        "shape": [2, 3],
        "dtype": "float32",
        "columns": ["age", "income", "score"],
        "label": {"name": "label", "shape": [2]},
        "privacy": {"min_rows": 10, "dp": None},
    }
    # A party process is handed one file per part, holding exactly that part.
    assert store.content_path(asset).suffix == ".npy"
    np.testing.assert_array_equal(np.load(store.content_path(asset, "labels")), labels)


def test_public_metadata_reveals_no_paths_or_hashes(store: Store, tmp_path: Path) -> None:
    asset = store.import_csv(
        write(tmp_path / "d.csv", "a,b\n4817.25,9163.5\n"), tags=["t"], description="x"
    )
    public = asset.public()
    assert set(public) == {"id", "name", "kind", "tags", "description", "schema", "created_at"}
    # The timestamp is a number of its own: leave it out of the search for data values.
    text = repr({k: v for k, v in public.items() if k != "created_at"})
    assert str(tmp_path) not in text
    assert store.content_path(asset).stem not in text  # the content hash
    assert "4817" not in text and "9163" not in text  # no data values


@pytest.mark.parametrize(
    ("cell", "value_shown"),
    [
        ("n/a", "'n/a'"),
        ("", "''"),
        ("   ", "'   '"),
        ("inf", "'inf'"),
        ("NaN", "'NaN'"),
        ("1_000", "'1_000'"),
    ],
)
def test_csv_bad_cell_names_line_column_and_value(
    store: Store, tmp_path: Path, cell: str, value_shown: str
) -> None:
    path = write(tmp_path / "bob.csv", f"id,age\n1,20\n2,{cell}\n3,40\n")
    with pytest.raises(DatasetError) as err:
        store.import_csv(path)
    message = err.value.message
    assert "bob.csv line 3" in message
    assert "column 'age'" in message
    assert value_shown in message
    assert "fix the cell" in message or "fill it in" in message
    assert store.list() == []


def test_csv_value_too_large_for_float32_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"line 2, column 'a': '1e39' is too large"):
        store.import_csv(write(tmp_path / "big.csv", "a\n1e39\n"))


def test_csv_bad_label_cell_refused(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", "x,y\n1,cat\n")
    with pytest.raises(DatasetError, match=r"l.csv line 2, column 'y': 'cat' is not a number"):
        store.import_csv(path, label_column="y")


def test_csv_ragged_row_says_expected_and_found(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(DatasetError, match=r"r.csv line 3: expected 3 cells .* found 2"):
        store.import_csv(path)


def test_csv_line_numbers_count_quoted_newlines(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'a,"b\nc"\n1,2\nx,3\n')
    with pytest.raises(DatasetError, match=r"q.csv line 4, column 'a': 'x'"):
        store.import_csv(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", r"e.csv is empty"),
        ("\n  \n", r"e.csv is empty"),
        ("a,b\n", r"e.csv has a header but no data rows"),
        ("a,,c\n1,2,3\n", r"column 2 has no name"),
        ("a,b,a\n1,2,3\n", r"'a' appears twice \(columns 1 and 3\)"),
        ("a;b\n1;2\n", r"separated by ';'"),
    ],
)
def test_csv_structural_problems_are_explained(
    store: Store, tmp_path: Path, content: str, expected: str
) -> None:
    with pytest.raises(DatasetError, match=expected):
        store.import_csv(write(tmp_path / "e.csv", content))


def test_csv_unknown_label_column_lists_columns(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "age,income\n1,2\n")
    with pytest.raises(DatasetError, match=r"no column 'label'.*age, income"):
        store.import_csv(path, label_column="label")


def test_csv_not_utf8_refused(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name\n1\n2\nM\u00fcller\n".encode("latin-1"))
    with pytest.raises(
        DatasetError, match=r"latin.csv line 4 is not UTF-8 text.*save the file as UTF-8"
    ):
        store.import_csv(path)


def test_csv_with_utf8_bom_accepted(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert store.import_csv(path).schema["columns"] == ["a", "b"]


def big_csv(path: Path, rows: int, columns: int = 6) -> tuple[Path, np.ndarray]:
    """A CSV of ``rows`` random rows (some MB), and the float32 values it holds."""
    values = np.random.default_rng(7).standard_normal((rows, columns)) * 100
    with open(path, "w", newline="") as f:
        f.write(",".join(f"c{i}" for i in range(columns)) + "\r\n")  # as Excel writes it
        np.savetxt(f, values, fmt="%.5f", delimiter=",", newline="\r\n")
    return path, np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64).astype(np.float32)


def test_a_large_csv_import_reports_progress_while_it_reads(store: Store, tmp_path: Path) -> None:
    path, values = big_csv(tmp_path / "big.csv", 120_000)
    size = path.stat().st_size
    calls: list[tuple[int, int]] = []
    asset = store.import_csv(path, label_column="c5", progress=lambda d, t: calls.append((d, t)))

    assert {t for _, t in calls} == {size}  # bytes of the file
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == size
    assert len([d for d in done if 0 < d < size]) >= 3  # during the reading, not only at its end
    np.testing.assert_array_equal(store.load_array(asset), values[:, :5])
    np.testing.assert_array_equal(store.load_array(asset, "labels"), values[:, 5])


def test_a_progress_callback_that_raises_stops_the_import(store: Store, tmp_path: Path) -> None:
    path, _ = big_csv(tmp_path / "big.csv", 60_000)

    def stop(done: int, total: int) -> None:
        if done < total:
            raise StoreError("cancelled")

    with pytest.raises(StoreError, match="cancelled"):
        store.import_csv(path, progress=stop)
    assert store.list() == [] and blob_files(store) == []


def test_csv_content_is_stored_as_np_save_writes_it(store: Store, tmp_path: Path) -> None:
    """Equal data makes the same blob, whichever way it was read."""
    path, values = big_csv(tmp_path / "big.csv", 5_000, columns=3)
    asset = store.import_csv(path, label_column="c1")
    for part, expected in (("features", values[:, [0, 2]]), ("labels", values[:, 1])):
        saved = tmp_path / f"{part}.npy"
        np.save(saved, np.ascontiguousarray(expected))
        assert store.content_path(asset, part).read_bytes() == saved.read_bytes()


@pytest.mark.parametrize("chunk", [5, 17, 64, 1 << 21])
def test_csv_read_in_chunks_reads_the_same_as_whole(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Quoted cells with line ends, CRLF, CR alone, blank lines and spaces: the quick path and
    csv agree, however the text is cut."""
    import node.datasets

    monkeypatch.setattr(node.datasets, "_CSV_CHUNK_CHARS", chunk)
    cases = {
        "crlf.csv": ("a,b\r\n1,2\r\n\r\n 3 ,\t4\r\n", [[1, 2], [3, 4]]),
        "mac.csv": ("a,b\r1,2\r3,4\r", [[1, 2], [3, 4]]),
        "quoted.csv": ('"a","b"\n1,2\n"3","4\n"\n5,6\n', [[1, 2], [3, 4], [5, 6]]),
        "spaces.csv": ("a,b\n1,2\n   \n3,4", [[1, 2], [3, 4]]),
    }
    for name, (text, rows) in cases.items():
        (tmp_path / name).write_bytes(text.encode())
        asset = store.import_csv(tmp_path / name)
        assert store.load_array(asset).tolist() == rows, name
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\r\n1,2\r\n3,4\r\n5,x\r\n6\r\n")
    with pytest.raises(DatasetError, match=r"bad.csv line 4, column 'b': 'x' is not a number"):
        store.import_csv(bad)


def test_missing_files_refused_with_path(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope.csv: no such file"):
        store.import_csv(tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match=r"nope.npy: no such file"):
        store.import_npy(tmp_path / "nope.npy")
    with pytest.raises(ModelError, match=r"nope.onnx: no such file"):
        store.import_onnx(tmp_path / "nope.onnx")


# -- .npy ----------------------------------------------------------------------------------


def test_npy_round_trip_as_float32(store: Store, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.int64).reshape(3, 2))
    np.save(tmp_path / "v.npy", np.array([1.5, 2.5, 3.5]))
    x = store.import_npy(tmp_path / "x.npy", tags=["x"])
    v = store.import_npy(tmp_path / "v.npy", name="vector")

    np.testing.assert_array_equal(store.load_array(x), np.arange(6, dtype=np.float32).reshape(3, 2))
    assert store.load_array(x).dtype == np.float32
    assert x.schema == {
        "rows": 3,
        "shape": [3, 2],
        "dtype": "float32",
        "columns": ["c0", "c1"],
        "label": None,
        "privacy": {"min_rows": 10, "dp": None},
    }
    assert v.name == "vector" and v.schema["shape"] == [3, 1]
    with pytest.raises(StoreError, match="has no labels"):
        store.load_array(x, "labels")


def test_npy_object_array_refused_without_unpickling(store: Store, tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"obj.npy holds Python objects"):
        store.import_npy(tmp_path / "obj.npy")


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), r"NaN, infinite .* row 0, column 1"),
        (np.array([1.0, 2.0, np.inf]), r"row 2, column 0"),
        (np.array([1e300]), r"too large for a 32-bit float"),
        (np.zeros((2, 2, 2)), r"shape \(2, 2, 2\)"),
        (np.zeros((0, 3)), r"no data"),
        (np.array(["a", "b"]), r"holds <U1 values"),
        (np.array([1 + 2j]), r"complex128 values"),
    ],
)
def test_npy_bad_content_refused(
    store: Store, tmp_path: Path, array: np.ndarray, expected: str
) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DatasetError, match=expected):
        store.import_npy(tmp_path / "bad.npy")
    assert store.list() == []


def test_npy_not_an_array_file_refused(store: Store, tmp_path: Path) -> None:
    write(tmp_path / "fake.npy", "a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"fake.npy is not a .npy"):
        store.import_npy(tmp_path / "fake.npy")
    np.savez(tmp_path / "arch.npz", a=np.zeros(2))
    with pytest.raises(DatasetError, match=r"is an .npz archive"):
        store.import_npy(tmp_path / "arch.npz")


# -- models --------------------------------------------------------------------------------


def test_torch_mlp_imports_with_schema(store: Store, mlp_onnx: bytes, tmp_path: Path) -> None:
    (tmp_path / "mlp.onnx").write_bytes(mlp_onnx)
    asset = store.import_onnx(tmp_path / "mlp.onnx", tags=["model"])

    assert asset.kind == "model" and asset.name == "mlp"
    assert asset.schema == {
        "inputs": [{"name": "input", "shape": [1, 4]}],
        "outputs": [{"name": "output", "shape": [1, 2]}],
        "ops": ["Gemm", "Relu"],
        "parameters": 4 * 8 + 8 + 8 * 2 + 2,
        "opset": 17,
        "architecture": architecture.of_model(mlp_onnx),  # what a job's proposal carries
    }
    assert store.model_bytes(asset) == mlp_onnx  # stored exactly as given
    assert store.content_path(asset).suffix == ".onnx"
    with pytest.raises(StoreError, match="is a model, not a dataset"):
        store.load_array(asset)


def test_import_torch_exports_then_imports(store: Store) -> None:
    asset = store.import_torch(mlp(), torch.randn(1, 4), tags=["m"])
    assert asset.name == "Sequential"
    assert asset.schema["ops"] == ["Gemm", "Relu"]
    onnx.load_model_from_string(store.model_bytes(asset))  # valid ONNX on disk


def test_import_torch_export_failure_is_a_model_error(store: Store) -> None:
    with pytest.raises(ModelError, match=r"Sequential could not be exported to ONNX"):
        store.import_torch(mlp(), torch.randn(1, 5))  # wrong input width


@pytest.mark.parametrize("which", ["batchnorm", "equal-zero-biases"])
def test_models_with_identity_nodes_import(store: Store, which: str) -> None:
    # The TorchScript exporter emits Identity nodes for these, which CrypTen alone rejects.
    torch.manual_seed(0)
    if which == "batchnorm":
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        ).eval()
    else:
        layers = [torch.nn.Linear(4, 4) for _ in range(3)]
        for layer in layers:
            torch.nn.init.zeros_(layer.bias)
        model = torch.nn.Sequential(*layers)
    data = onnx_bytes_from_pytorch(model, torch.randn(2, 4))
    assert "Identity" in {n.op_type for n in onnx.load_model_from_string(data).graph.node}

    asset = store.import_onnx(data, name=which)
    assert "Identity" in asset.schema["ops"]
    assert store.model_bytes(asset) == data  # not stripped in the store


def test_unsupported_op_refused_naming_it(store: Store) -> None:
    with pytest.raises(ModelError) as err:
        store.import_onnx(hand_built(["Relu", "TopK"]), name="topk")
    message = err.value.message
    assert "TopK" in message and "Relu" not in message
    assert "replace those layers" in message
    assert store.list() == []


def test_every_unsupported_op_is_named(store: Store) -> None:
    with pytest.raises(ModelError, match=r"ops Abs, Tanh"):
        store.import_onnx(hand_built(["Tanh", "Abs", "Relu"]))


def test_supported_hand_built_model_imports(store: Store) -> None:
    # Erf is on CrypTen's list (GELU exports use it); the output shape here is unknown.
    asset = store.import_onnx(hand_built(["Erf"]))
    assert asset.schema["inputs"] == [{"name": "x0", "shape": [None, 3]}]
    assert asset.schema["outputs"] == [{"name": "t0", "shape": None}]
    assert asset.schema["parameters"] == 0


def test_model_with_two_inputs_refused(store: Store) -> None:
    with pytest.raises(ModelError, match=r"2 input\(s\) and 1 output\(s\)"):
        store.import_onnx(hand_built(["Add"], n_inputs=2))


@pytest.mark.parametrize("data", [b"", b"certainly not a model \x00\xff\x13", b"a,b\n1,2\n"])
def test_non_onnx_bytes_refused(store: Store, data: bytes) -> None:
    with pytest.raises(ModelError, match=r"is not an ONNX model"):
        store.import_onnx(data)
    assert store.list() == [] and blob_files(store) == []


# -- tags and lookup -----------------------------------------------------------------------


def test_bad_tags_refused_with_the_rule(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a\n1\n")
    for bad in ["", "has space", "x" * 65, "émoji", "a/b"]:
        with pytest.raises(StoreError, match=r"1 to 64 characters from lowercase letters"):
            store.import_csv(path, tags=[bad])
    assert store.import_csv(path, tags="one-tag").tags == ("one-tag",)  # a lone string is one tag
    assert store.import_csv(path, tags=["a.b:c_d-1"]).tags == ("a.b:c_d-1",)


def test_by_tag_unknown_and_ambiguous(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a\n1\n")
    first = store.import_csv(path, tags=["shared", "first"])
    second = store.import_csv(path, tags=["shared"])

    assert store.by_tag(" FIRST ") == first
    with pytest.raises(
        UnknownAsset, match=r"no asset tagged 'missing' on this node; `parley assets`"
    ):
        store.by_tag("missing")
    with pytest.raises(StoreError) as err:
        store.by_tag("shared")
    assert not isinstance(err.value, UnknownAsset)
    assert first.id in err.value.message and second.id in err.value.message
    assert "more specific tag" in err.value.message


def test_list_by_several_tags_and_kind(store: Store, tmp_path: Path, mlp_onnx: bytes) -> None:
    path = write(tmp_path / "d.csv", "a\n1\n")
    a = store.import_csv(path, tags=["mnist", "train"])
    b = store.import_csv(path, tags=["mnist", "test"])
    m = store.import_onnx(mlp_onnx, tags=["mnist"])

    assert store.list() == [a, b, m]
    assert store.list(["mnist"]) == [a, b, m]
    assert store.list(["MNIST", "train"]) == [a]
    assert store.list(["train", "test"]) == []
    assert store.list(["mnist"], kind="model") == [m]
    assert store.list(kind="dataset") == [a, b]
    with pytest.raises(StoreError, match="unknown asset kind"):
        store.list(kind="table")


def test_get_and_remove_unknown(store: Store) -> None:
    with pytest.raises(UnknownAsset, match="no asset 'a-000000000000'"):
        store.get("a-000000000000")
    with pytest.raises(UnknownAsset):
        store.remove("a-000000000000")


# -- content addressing and persistence ----------------------------------------------------


def test_same_content_stored_once_and_kept_while_used(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,y\n1,0\n2,1\n")
    first = store.import_csv(path, label_column="y")
    second = store.import_csv(path, label_column="y", name="copy")
    assert first.id != second.id
    assert store.content_path(first) == store.content_path(second)
    assert len(blob_files(store)) == 2  # features + labels, once

    store.remove(first.id)
    assert store.content_path(second).is_file()
    np.testing.assert_array_equal(store.load_array(second, "labels"), [0, 1])

    store.remove(second.id)
    assert blob_files(store) == []
    with pytest.raises(UnknownAsset):
        store.get(second.id)


def test_blob_name_is_the_hash_of_its_bytes(store: Store, mlp_onnx: bytes) -> None:
    import hashlib

    path = store.content_path(store.import_onnx(mlp_onnx))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path == store.blobs_dir / digest[:2] / f"{digest}.onnx"


def test_store_persists_across_reopen(tmp_path: Path, mlp_onnx: bytes) -> None:
    data_dir = tmp_path / "data"
    with Store(data_dir) as store:
        assert store.catalog_version() == 0
        ds = store.import_csv(
            write(tmp_path / "d.csv", "a\n1\n2\n"), tags=["keep"], description=" d "
        )
        model = store.import_onnx(mlp_onnx, tags=["m"])
        gone = store.import_csv(tmp_path / "d.csv")
        store.remove(gone.id)
        assert store.catalog_version() == 4

    with Store(data_dir) as store:
        assert store.list() == [ds, model]
        assert store.get(ds.id).description == "d"
        assert store.by_tag("keep") == ds
        np.testing.assert_array_equal(store.load_array(ds), [[1], [2]])
        assert store.model_bytes(model) == mlp_onnx
        assert store.catalog_version() == 4


def test_damaged_database_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "store.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open the asset store .*store.sqlite"):
        Store(tmp_path / "data")


def test_assets_are_hashable_values(store: Store, tmp_path: Path) -> None:
    asset = store.import_csv(write(tmp_path / "d.csv", "a\n1\n"))
    assert {asset, store.get(asset.id)} == {asset}


def test_closed_store_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list()


def test_concurrent_imports_from_threads(store: Store, tmp_path: Path) -> None:
    paths = []
    for i in range(8):
        np.save(tmp_path / f"x{i}.npy", np.full((4, 2), i % 3))
        paths.append(tmp_path / f"x{i}.npy")
    with ThreadPoolExecutor(max_workers=8) as pool:
        assets = list(pool.map(lambda p: store.import_npy(p, tags=["batch"]), paths))
    assert sorted(a.id for a in store.list(["batch"])) == sorted(a.id for a in assets)
    assert store.catalog_version() == 8
    assert len(blob_files(store)) == 3  # three distinct contents
    for i, asset in enumerate(assets):
        assert store.load_array(asset)[0, 0] == i % 3



@contextmanager
def threads_switch_inside_parses() -> Iterator[None]:
    """Make a thread give up the interpreter in the middle of any parse: a garbage collection
    every few allocations, whose callback sleeps. That is what CPython 3.11's shared AST
    recursion counter cannot take (gh-106905)."""
    import gc
    import time

    threshold = gc.get_threshold()
    callback = lambda phase, info: time.sleep(0)  # noqa: E731
    gc.set_threshold(5)
    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)


def test_imports_and_job_checks_at_once_in_threads_all_succeed(store: Store, tmp_path: Path
                                                                ) -> None:
    """The node imports datasets and checks job sources in worker threads at the same time;
    numpy reads each .npy header with the same parser as the jail's check, and neither may
    fail because the other ran (CI once failed an import with 'AST constructor recursion depth
    mismatch')."""
    from node.jail.static import check

    paths = []
    for i in range(16):
        np.save(tmp_path / f"x{i}.npy", np.full((4, 2), i))
        paths.append(tmp_path / f"x{i}.npy")
    source = "def run(crypten):\n" + "    x = crypten.load('a', 0).sum(dim=[0, 1]) + 1\n" * 40 + \
        "    return {'s': x.get_plain_text()}\n"

    def work(i: int) -> object:
        if i % 2:
            return store.import_npy(paths[i // 2], tags=["threads"])
        return check(source, "run")

    with threads_switch_inside_parses(), ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(32)))
    assets = [r for r in results if hasattr(r, "id")]
    assert len(assets) == 16
    for i, asset in enumerate(assets):
        assert store.load_array(asset)[0, 0] == i

# -- atomicity -----------------------------------------------------------------------------


def test_failed_blob_write_leaves_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "d.csv", "a\n1\n")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", disk_full)
        with pytest.raises(
            StoreError, match=r"could not save 'd'.*No space left on device.*import it again"
        ):
            store.import_csv(path, tags=["t"])

    assert store.list() == [] and store.catalog_version() == 0
    assert blob_files(store) == []  # the temporary file went too
    assert store.load_array(store.import_csv(path, tags=["t"])).tolist() == [[1.0]]


def test_failed_row_insert_leaves_no_asset_and_no_blob(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "d.csv", "a,y\n1,0\n")
    # Same bytes as the CSV's features: the failed import must not take the shared blob along.
    kept = store.import_npy(_save(tmp_path / "k.npy", np.array([[1.0]])), tags=["kept"])

    def crash(*args: object) -> None:
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(Store, "_insert_asset", crash)
        with pytest.raises(RuntimeError):
            store.import_csv(path, tags=["t"], label_column="y")

    assert store.list() == [kept] and store.catalog_version() == 1
    assert blob_files(store) == [store.content_path(kept)]
    assert store.load_array(kept).tolist() == [[1.0]]
    store.import_csv(path, tags=["t"], label_column="y")
    assert [a.tags for a in store.list()] == [("kept",), ("t",)]


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


CRASHING_IMPORT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from node.store import Store

    data_dir, where, source = sys.argv[1:]
    store = Store(Path(data_dir))
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "before-row":      # blobs renamed into place, row not yet inserted
        Store._insert_asset = die
    else:                           # temporary file written and fsynced, not yet renamed
        os.replace = die
    store.import_npy(source, tags=["doomed"])
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize(("where", "leftover"), [("before-row", ".npy"), ("mid-write", ".tmp-")])
@pytest.mark.real
def test_killed_import_leaves_no_asset_and_reopen_cleans_up(
    tmp_path: Path, where: str, leftover: str
) -> None:
    data_dir = tmp_path / "data"
    with Store(data_dir) as store:
        kept = store.import_csv(write(tmp_path / "d.csv", "a\n1\n"), tags=["kept"])
        kept_blob = store.content_path(kept).name
    source = _save(tmp_path / "x.npy", np.arange(6.0).reshape(3, 2))

    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_IMPORT, str(data_dir), where, str(source)],
        check=False,
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    left = [p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert any(leftover in name for name in left if name != kept_blob), left

    with Store(data_dir) as store:
        assert store.list() == [kept]
        assert store.catalog_version() == 1
        assert blob_files(store) == [store.content_path(kept)]  # leftovers removed on open
        again = store.import_npy(source, tags=["doomed"])
        np.testing.assert_array_equal(store.load_array(again), np.arange(6.0).reshape(3, 2))


def test_remove_failing_at_commit_keeps_asset_and_content(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset = store.import_csv(write(tmp_path / "d.csv", "a\n1\n"))
    original = Store._write

    @contextmanager
    def commit_fails(self: Store) -> Iterator[sqlite3.Connection]:
        with original(self) as db:
            yield db
            raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as m:
        m.setattr(Store, "_write", commit_fails)
        with pytest.raises(StoreError, match=r"could not remove .*it is still here"):
            store.remove(asset.id)

    assert store.get(asset.id) == asset
    assert store.load_array(asset).tolist() == [[1.0]]
    assert blob_files(store) == [store.content_path(asset)]  # put back, no trash left
