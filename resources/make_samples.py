"""Derive the demo's sample files from the vendored breast cancer data (breast_cancer.csv).

Why: the demos need small, realistic private inputs held by different parties (alice, bob,
carol) and a private model held by alice. Rather than ship hand-made files, everything is
derived here, deterministically, from one public data set, so the files can be checked and
regenerated:  python -m resources.make_samples  (from the repository root).

A fixed shuffle (numpy, seed 0) of the 569 rows is cut in two:
  * the first 399 rows are the parties' private data for the collaborative demos;
  * the last 170 rows are alice's own data, used only to train her model (not written out).
diagnosis: 0 = malignant, 1 = benign (scikit-learn's encoding, kept as is).
Values are copied verbatim as text, so no digits are lost or invented.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from node.compat import crypten, onnx_bytes_from_pytorch

HERE = Path(__file__).resolve().parent
SEED = 0
FIXED_POINT_SCALE = 2**16  # CrypTen's default encoding: 16 fractional bits
N_PARTIES_DATA = 399  # rows 0..398 of the shuffle; rows 399..568 (170) train alice's model


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_csv(name: str, header: list[str], rows: list[list[str]]) -> None:
    with (HERE / name).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def columns(header: list[str], rows: list[list[str]], names: list[str]):
    idx = [header.index(n) for n in names]
    return names, [[row[i] for i in idx] for row in rows]


def train_model(x: np.ndarray, y: np.ndarray) -> torch.nn.Sequential:
    """MLP 30 -> 16 -> ReLU -> 2 on raw features, standardisation folded into the first layer.

    Outputs two logits; the predicted class is the argmax (0 = malignant, 1 = benign).
    """
    torch.manual_seed(SEED)
    mean, std = x.mean(axis=0), x.std(axis=0)
    xs = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(300):  # full batch: 170 rows
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), yt).backward()
        opt.step()
    # W (x - m) / s + b  ==  (W / s) x + (b - W m / s)
    first = model[0]
    with torch.no_grad():
        scale = torch.tensor(1.0 / std, dtype=torch.float32)
        shift = torch.tensor(mean / std, dtype=torch.float32)
        first.bias -= first.weight @ shift
        first.weight *= scale
        # Folded weights on large features (area is in the 1000s) are tiny and would lose up to
        # ~1.5% when CrypTen encodes them; rounding every parameter to its fixed-point grid makes
        # the plaintext model exactly the one CrypTen computes with.
        for param in model.parameters():
            param.copy_(torch.round(param * FIXED_POINT_SCALE) / FIXED_POINT_SCALE)
    return model.eval()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.tensor(x, dtype=torch.float32)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def main() -> None:
    header, rows = read_csv(HERE / "breast_cancer.csv")
    assert len(header) == 31 and header[-1] == "diagnosis" and len(rows) == 569
    features = header[:30]
    order = np.random.default_rng(SEED).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    data, model_part = shuffled[:N_PARTIES_DATA], shuffled[N_PARTIES_DATA:]

    # Vertical split: same rows, different columns per party.
    write_csv("alice_features.csv", *columns(header, data, features[:15]))
    write_csv("bob_features.csv", *columns(header, data, features[15:]))
    write_csv("carol_labels.csv", *columns(header, data, ["diagnosis"]))
    # Horizontal split: 3 contiguous blocks of 133 rows, all columns.
    block = N_PARTIES_DATA // 3
    for k, party in enumerate(["alice", "bob", "carol"]):
        write_csv(f"rows_{party}.csv", header, data[k * block : (k + 1) * block])
    # Private inference: bob's inputs for alice's model.
    write_csv("bob_inference.csv", *columns(header, data, features))

    def xy(part: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        arr = np.array(part, dtype=np.float64)
        return arr[:, :30], arr[:, 30].astype(np.int64)

    x_model, y_model = xy(model_part)
    x_data, y_data = xy(data)
    model = train_model(x_model, y_model)
    onnx_data = onnx_bytes_from_pytorch(model, torch.zeros(1, 30))
    crypten.nn.from_onnx(io.BytesIO(onnx_data))  # must convert for the private-inference demo
    (HERE / "alice_model.onnx").write_bytes(onnx_data)
    print(f"model accuracy: training part (170 rows) {accuracy(model, x_model, y_model):.4f}, "
          f"other rows (399) {accuracy(model, x_data, y_data):.4f}")


if __name__ == "__main__":
    main()
