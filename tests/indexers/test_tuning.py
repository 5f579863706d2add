"""The ANN tuning both backends share (indexers/tuning.py)."""
import numpy as np

from indexers.tuning import (FAR_QUERY_COSINE, TIE, recall, score_floors, smallest_setting,
                             synthetic_sets)


def unit_rows(n: int, dim: int = 16, seed: int = 7) -> np.ndarray:
    # not seed 0: the queries' directions come from rng 0 and would lie along their origins
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_synthetic_queries_lie_at_the_cosine_of_their_set():
    origins = unit_rows(10)
    sets = synthetic_sets(origins, lambda rows: np.full(len(rows), 0.8, dtype=np.float32),
                          np.random.default_rng(0), own=np.arange(100, 110))
    assert {name: len(queries) for name, (queries, _) in sets.items()} == \
        {"near": 4, "far": 3, "self": 3}
    near, far, itself = (sets[name][0] for name in ("near", "far", "self"))
    assert np.allclose(np.sum(near * origins[:4], axis=1), 0.8, atol=1e-5)
    assert np.allclose(np.sum(far * origins[4:7], axis=1), FAR_QUERY_COSINE, atol=1e-5)
    assert np.allclose(itself, origins[7:], atol=1e-6)
    assert sets["self"][1].tolist() == [107, 108, 109] and sets["near"][1] is None
    assert all(queries.dtype == np.float32 for queries, _ in sets.values())


def test_without_own_entries_there_is_no_self_set_and_far_takes_the_odd_query():
    sets = synthetic_sets(unit_rows(7), lambda rows: np.full(len(rows), 0.9),
                          np.random.default_rng(0))
    assert {name: len(queries) for name, (queries, _) in sets.items()} == {"near": 3, "far": 4}


def test_a_hit_is_a_score_reaching_the_exact_kth_and_ties_count():
    exact = np.array([[0.9, 0.8, 0.7], [0.5, -np.inf, -np.inf], [-np.inf] * 3])
    floors = score_floors(exact)
    assert np.allclose(floors[:2, 0], [0.7 - TIE, 0.5 - TIE]) and floors[2, 0] == np.inf
    found = np.array([[0.9, 0.7 - TIE / 2, 0.1], [0.5, -np.inf, -np.inf], [0.4, 0.3, 0.2]])
    assert recall(found, floors) == 3 / 9


def test_the_cheapest_setting_reaching_the_target_on_every_set_wins():
    measured = {8: {"a": 0.9, "b": 0.99}, 16: {"a": 0.96, "b": 0.97}, 32: {"a": 1.0, "b": 1.0}}
    assert smallest_setting((8, 16, 32), measured.__getitem__, 0.95) == (16, measured[16])
    assert smallest_setting((8, 16), measured.__getitem__, 0.999) == (16, measured[16])
