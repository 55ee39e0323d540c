"""A reveal cannot single out a row: each leak of issue 11 against real nodes.

Bob owns a dataset of 40 people (4 columns and a label); alice orchestrates and is the one the
jobs reveal to. The default minimum aggregation is 10 rows. Each job below tries to learn one
person's values; each is refused at run time, with the job's line, the dataset and the number
of rows in its reason, and nothing is revealed. The same jobs pass where they should: to the
data's own owner, or once the owner lowers the minimum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.client import results
from tests.conftest import JOB_TIMEOUT
from tests.test_jobs import spec

ROWS = 40


@pytest.fixture
def people(make_node, tmp_path: Path):
    alice, bob = make_node("alice", min_rows=None), make_node("bob", min_rows=None)
    rng = np.random.default_rng(11)
    values = rng.integers(20, 70, size=(ROWS, 4)).astype(float)
    labels = rng.integers(0, 2, size=ROWS).astype(float)
    path = tmp_path / "people.csv"
    path.write_text("age,hours,wage,years,sick\n" + "\n".join(
        ",".join(repr(float(v)) for v in [*row, y]) for row, y in zip(values, labels)) + "\n")
    asset = bob.client.publish(path, tags=["people"], label_column="sick")
    assert asset["schema"]["privacy"] == {"min_rows": 10, "dp": None}
    return alice, bob, values, labels, asset


def _run(alice, bob, source: str, result_to: tuple[int, ...] = (0,)) -> dict:
    job = alice.client.submit(spec([alice, bob], source, [("people", 1, "dataset")],
                                   result_to=result_to))
    return alice.client.wait(job["id"], timeout=JOB_TIMEOUT)


def _refused(done: dict, *words: str) -> str:
    assert done["state"] == "failed", done
    reason = done["reason"]
    for word in words:
        assert word in reason, reason
    assert "result" not in done or not done["result"], done
    return reason


def test_a_sum_over_a_one_row_slice_is_refused(people):
    alice, bob, _, _, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    return x[3:4].sum(0).get_plain_text(dst=0)
''')
    _refused(done, "line 4", "'people'", "aggregates 1 row", "no fewer than 10")


def test_the_difference_of_two_sums_one_row_apart_is_refused_in_one_value(people):
    alice, bob, _, _, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    everyone = x.sum(0)
    all_but_one = x[1:].sum(0)
    return (everyone - all_but_one).get_plain_text(dst=0)
''')
    _refused(done, "line 6", "'people'", "aggregates 1 row")


def test_two_reveals_one_row_apart_in_one_job_are_refused(people):
    alice, bob, values, _, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    first = x.sum(0).get_plain_text(dst=0)
    second = x[1:].sum(0).get_plain_text(dst=0)
    return [first, second]
''')
    _refused(done, "line 5", "'people'", "differ from those of an earlier reveal (line 4) in 1 "
             "row")


def test_two_jobs_one_row_apart_are_refused_the_second_time(people):
    alice, bob, values, _, asset = people
    first = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    return x.sum(0).get_plain_text(dst=0)
''')
    assert first["state"] == "succeeded", first["reason"]
    assert results(first)[0] == pytest.approx(values.sum(0).tolist(), abs=0.05)
    second = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    return x[:-1].sum(0).get_plain_text(dst=0)
''')
    _refused(second, "line 4", "'people'", f"earlier reveal (job {first['id']}, line 4)",
             "in 1 row")
    # bob's audit log says what each reveal covered
    entries = [e["fields"] for e in bob.client.audit(kind="reveal")["entries"]]
    assert any(e.get("rows") == f"people: {ROWS}" for e in entries), entries
    # the same aggregate again is no news: it runs
    again = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    return x.mean(0).get_plain_text(dst=0)
''')
    assert again["state"] == "succeeded", again["reason"]


def test_a_comparison_on_one_row_used_as_an_oracle_is_refused(people):
    alice, bob, _, _, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    bits = []
    for threshold in [64, 32, 48, 56]:
        bits.append((x[5, 2] > threshold).get_plain_text(dst=0))
    return bits
''')
    _refused(done, "line 6", "aggregates 1 row")


def test_labels_returned_as_predictions_are_refused(people):
    alice, bob, _, _, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    y = crypten.load("people", 1, part="labels")
    predictions = y * 1.0
    return predictions.get_plain_text(dst=0)
''')
    _refused(done, "line 5", "aggregates 1 row")


def test_a_row_revealed_to_its_owner_cannot_leave_encrypted_again(people):
    alice, bob, _, _, _ = people
    done = _run(alice, bob, '''
def run(crypten, torch):
    x = crypten.load("people", 1)
    mine = x.get_plain_text(dst=1)
    again = crypten.cryptensor(mine if mine is not None else torch.zeros(40, 4), src=1)
    return again[0].get_plain_text(dst=0)
''', result_to=(0, 1))
    _refused(done, "line 6", "aggregates 1 row")


def test_aggregates_and_the_owners_own_rows_are_revealed(people):
    alice, bob, values, labels, _ = people
    done = _run(alice, bob, '''
def run(crypten):
    x = crypten.load("people", 1)
    y = crypten.load("people", 1, part="labels")
    mean = x.mean(0)
    spread = ((x - mean) * (x - mean)).mean(0)
    return {"mean": mean.get_plain_text(dst=0), "var": spread.get_plain_text(dst=0),
            "sick": y.mean().get_plain_text(dst=0)}
''')
    assert done["state"] == "succeeded", done["reason"]
    got = results(done)[0]
    assert got["mean"] == pytest.approx(values.mean(0).tolist(), abs=0.05)
    assert got["sick"] == pytest.approx(labels.mean(), abs=0.01)
    # bob may see his own rows: a reveal to the data's owner is not limited
    own = _run(alice, bob, '''
def run(crypten):
    return crypten.load("people", 1)[0].get_plain_text(dst=1)
''', result_to=(1,))
    assert own["state"] == "succeeded", own["reason"]
    assert results(own)[1] == pytest.approx(values[0].tolist(), abs=0.01)


def test_the_owner_sets_the_minimum_and_each_job_states_the_one_it_runs_under(people):
    alice, bob, values, _, asset = people
    one_row = '''
def run(crypten):
    return crypten.load("people", 1)[2].get_plain_text(dst=0)
'''
    bob.client.update_asset(asset["id"], privacy={"min_rows": 1})
    done = _run(alice, bob, one_row)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(values[2].tolist(), abs=0.01)
    # a proposal states the minimum it was sent for; bob's node holds it to that
    bob.client.update_asset(asset["id"], privacy={"min_rows": 25})
    job = alice.client.submit(spec([alice, bob], one_row, [("people", 1, "dataset")]))
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["proposal"]["bindings"][0]["expect"]["min_rows"] == 25
    _refused(done, "aggregates 1 row", "no fewer than 25")


# -- differential privacy ------------------------------------------------------------------
def _dp_plan(alice, bob, epsilon: float) -> dict:
    plan = {"kind": "statistics", "data": [{"tag": "people", "rank": 1}],
            "stats": ["count", "mean"], "output_to": 0, "dp": {"epsilon": epsilon}}
    job = alice.client.submit({"title": "wages", "plan": plan,
                               "parties": [alice.party.spec(), bob.party.spec()]})
    return alice.client.wait(job["id"], timeout=JOB_TIMEOUT)


def test_a_dataset_with_differential_privacy_gets_noise_and_spends_its_budget(people):
    alice, bob, values, _, asset = people
    bob.client.update_asset(asset["id"], privacy={"dp": {"epsilon": 1.0, "bounds": [[0, 100]]}})
    # a job that would see its values exactly is refused at once
    exact = alice.client.submit(spec([alice, bob], '''
def run(crypten):
    return crypten.load("people", 1).mean(0).get_plain_text(dst=0)
''', [("people", 1, "dataset")]))
    done = alice.client.wait(exact["id"], timeout=JOB_TIMEOUT)
    _refused(done, "differential privacy on", "statistics plans with dp")

    first, second = _dp_plan(alice, bob, 0.4), _dp_plan(alice, bob, 0.4)
    for done in (first, second):
        assert done["state"] == "succeeded", done["reason"]
        got = results(done)[0]
        assert got["count"] == ROWS
        assert got["dp"]["epsilon"] == 0.4 and "Laplace" in got["dp"]["noise"]
        # Laplace noise of scale 4 x 100 / (40 x 0.4) = 25 per column: never exact
        assert got["mean"] != pytest.approx(values.mean(0).tolist(), abs=1e-3)
    # fresh noise each time: the same question twice gets two answers
    assert list(results(first)[0]["mean"]) != list(results(second)[0]["mean"])
    review = bob.client.job(first["id"], role="party")["detail"]["review"]
    assert review["budgets"] == ["differential privacy on 'people': this job adds noise and "
                                 "spends epsilon 0.4 of its budget; 1 of 1 left before it"]
    assert "laplace_noise('people', 1, 'mean', n, 0.4, d)" in review["source"]
    spent = [e["fields"] for e in bob.client.audit(kind="privacy")["entries"]]
    assert [(e["epsilon"], e["left"]) for e in spent] == [("0.4", "0.6"), ("0.4", "0.2")]
    # 0.2 left: a third is refused, and says why
    third = _dp_plan(alice, bob, 0.4)
    _refused(third, "'people' here", "epsilon 0.2 of 1 left", "would spend 0.4")
