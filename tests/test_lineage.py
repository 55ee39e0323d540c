"""Row lineage rules (node/jail/lineage.py) on real CrypTen tensors, in a one-party world.

Each case is an expression a job could write and the rows of each dataset it aggregates:
``(k, axis, covered)`` = each element aggregates at least k rows; the axis along which
elements are still rows (None: aggregated); how many rows the value depends on. The refusals
themselves run against real nodes in tests/test_reveal_rows.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from node.compat import crypten
from node.jail import lineage as L
from tests.conftest import one_party_crypten

N = 20


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with one_party_crypten(tmp_path_factory.mktemp("lineage")):
        cls = crypten.CrypTensor
        saved = cls.__getattribute__
        dunders = {n: crypten.mpc.MPCTensor.__dict__.get(n) for n in (
            "__getitem__", "__setitem__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
            "__ge__", "__rtruediv__", "__pow__")}
        tracker = L.Tracker(crypten, L.Knowledge())
        tracker.install()
        try:
            yield tracker
        finally:  # leave CrypTen as other tests expect it
            cls.__getattribute__ = saved
            for name, func in dunders.items():
                if func is not None:
                    setattr(crypten.mpc.MPCTensor, name, func)


def load(n: int, d: int, key: str) -> object:
    x = crypten.cryptensor(torch.randn(n, d) if d else torch.rand(n))
    L.put(x, {key: L.fresh(n)})
    return x


def rows(value: object) -> dict[str, tuple[int, int | None, int]]:
    return {key: (r.k, r.axis, int(r.covered().sum())) for key, r in L.of(value).items()}


def test_sums_and_means_over_rows_aggregate_and_slices_follow_the_rows(ct):
    x = load(N, 3, "a@1")
    assert rows(x) == {"a@1": (1, 0, N)}
    assert rows(x.sum()) == rows(x.sum(0)) == rows(x.mean(0)) == {"a@1": (N, None, N)}
    assert rows(x.sum(1)) == {"a@1": (1, 0, N)}  # over columns: still one row each
    assert rows(x[0]) == {"a@1": (1, None, 1)}
    assert rows(x[1:]) == {"a@1": (1, 0, N - 1)}
    assert rows(x[1:].sum(0)) == {"a@1": (N - 1, None, N - 1)}
    assert rows(x.view(-1).sum()) == {"a@1": (N, None, N)}
    assert rows(x[:5].flatten(start_dim=1)) == {"a@1": (1, 0, 5)}
    assert rows(x.t()) == {"a@1": (1, 1, N)}


def test_what_separates_two_aggregates_is_what_their_combination_stands_for(ct):
    x = load(N, 3, "a@1")
    assert rows(x.sum(0) - x[1:].sum(0)) == {"a@1": (1, None, N)}
    assert rows(x[: N // 2].sum(0) - x[N // 2:].sum(0)) == {"a@1": (N // 2, None, N)}
    mean = x.mean(0)
    assert rows(((x - mean) * (x - mean)).mean(0)) == {"a@1": (N, None, N)}


def test_comparisons_max_and_argmax_do_not_aggregate(ct):
    x = load(N, 3, "a@1")
    assert rows(x[0, 0] > 0) == {"a@1": (1, None, 1)}
    assert rows((x[:, 0] > 0).sum()) == {"a@1": (N, None, N)}  # a count over rows
    assert rows(x.max()) == rows(x.argmax(dim=0)) == {"a@1": (1, None, N)}


def test_training_carries_the_rows_into_gradients_and_weights(ct):
    x, y = load(N, 3, "a@0"), load(N, 1, "y@2")
    w = crypten.cryptensor(torch.zeros(3, 1))
    err = x.matmul(w).sigmoid() - y
    assert rows(err) == {"a@0": (1, 0, N), "y@2": (1, 0, N)}
    w = w - x.t().matmul(err) * 0.1
    assert rows(w) == {"a@0": (N, None, N), "y@2": (N, None, N)}
    model = crypten.nn.Sequential(crypten.nn.Linear(3, 4), crypten.nn.ReLU(),
                                  crypten.nn.Linear(4, 1))
    model.encrypt(src=0)
    model.train()
    loss = crypten.nn.BCEWithLogitsLoss()(model(x), y)
    optimizer = crypten.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert rows(loss) == {"a@0": (N, None, N), "y@2": (N, None, N)}
    for p in model.parameters():  # the biases too: their gradients came through autograd
        assert rows(p) == {"a@0": (N, None, N), "y@2": (N, None, N)}
    # predictions are per row of x; the labels reach them only through the model
    assert rows(model(x) > 0) == {"a@0": (1, 0, N), "y@2": (N, None, N)}


def test_rows_split_across_parties_are_counted_per_dataset(ct):
    r = crypten.cat([load(10, 3, "r@0"), load(15, 3, "r@1")], dim=0)
    assert rows(r) == {"r@0": (1, 0, 10), "r@1": (1, 0, 15)}
    assert rows(r.mean(0)) == {"r@0": (10, None, 10), "r@1": (15, None, 15)}
    c = crypten.cat([load(N, 2, "a@0"), load(N, 2, "b@1")], dim=1)  # columns side by side
    assert rows(c.t().matmul(load(N, 1, "y@2"))) == {
        "a@0": (N, None, N), "b@1": (N, None, N), "y@2": (N, None, N)}


def test_a_value_encrypted_from_a_rank_carries_what_was_revealed_to_it(ct):
    knowledge = L.Knowledge()
    x = load(N, 3, "a@1")
    knowledge.learn(1, L.of(x[0]))
    tracker = L.Tracker(crypten, knowledge)
    assert {k: r.k for k, r in tracker.from_plain(1).items()} == {"a@1": 1}
    assert tracker.from_plain(0) == {}
    knowledge.learn(None, L.of(x.sum(0)))  # to every party
    assert set(tracker.from_plain(0)) == {"a@1"}


def test_row_sets_travel_packed(ct):
    mask = torch.rand(37) > 0.5
    packed = L.pack(mask.numpy())
    assert (L.unpack(packed, 37) == mask.numpy()).all()
