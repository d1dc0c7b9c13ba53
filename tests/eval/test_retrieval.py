"""Latent retrieval (FAISS flat indexes), precision@k against true state, and the kNN probe."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from jepalab.errors import JepalabError

pytest.importorskip("faiss")

from jepalab.eval.downstream import label_efficiency  # noqa: E402
from jepalab.eval.retrieval import LatentIndex, knn_probe, precision_at_k  # noqa: E402


def test_known_neighbours_and_exact_distances():
    xs = np.array([0.0, 1.0, 3.0, 6.0, 10.0])
    z = np.zeros((5, 4))
    z[:, 2] = xs  # points on a line inside a 4-D space
    index = LatentIndex(z)
    dist, idx = index.search(z[[0, 3]], 3)
    np.testing.assert_array_equal(idx, [[0, 1, 2], [3, 2, 4]])
    np.testing.assert_allclose(dist, [[0, 1, 3], [0, 3, 4]], atol=1e-5)
    assert idx.dtype == np.int64 and len(index) == 5


def test_search_matches_brute_force():
    rng = np.random.default_rng(0)
    db, q = rng.normal(size=(500, 16)), rng.normal(size=(40, 16))
    dist, idx = LatentIndex(db).search(q, 7)
    full = np.linalg.norm(q[:, None] - db[None], axis=2)
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1)[:, :7])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :7], rtol=1e-4, atol=1e-4)


def test_cosine_metric_ignores_scale():
    z = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    dist, idx = LatentIndex(z, metric="cosine").search(np.array([[5.0, 0.0]]), 3)
    np.testing.assert_array_equal(idx, [[0, 1, 2]])
    np.testing.assert_allclose(dist, [[0.0, 1.0, 2.0]], atol=1e-6)


def test_bad_arguments():
    index = LatentIndex(np.zeros((3, 2)))
    with pytest.raises(JepalabError, match="k: must be"):
        index.search(np.zeros((1, 2)), 4)
    with pytest.raises(JepalabError, match="2-dim"):
        index.search(np.zeros((1, 3)), 1)
    with pytest.raises(JepalabError, match="metric"):
        LatentIndex(np.zeros((3, 2)), metric="hamming")


def _clusters(seed: int = 0, n_clusters: int = 5, per: int = 20):
    """States in well-separated 2-D clusters, latents = a random linear embedding + noise."""
    rng = np.random.default_rng(seed)
    centres = np.arange(n_clusters)[:, None] * np.array([10.0, 0.0])
    states = np.repeat(centres, per, axis=0) + rng.normal(size=(n_clusters * per, 2)) * 0.3
    emb = rng.normal(size=(2, 12))
    z = states @ emb + rng.normal(size=(len(states), 12)) * 0.05
    return z, states


def test_precision_is_one_on_separated_clusters_and_low_on_shuffled_states():
    z, states = _clusters()
    index = LatentIndex(z)
    p = precision_at_k(index, z, states, states, k=5, tol=3.0, exclude_self=True)
    assert p == 1.0
    shuffled = states[np.random.default_rng(1).permutation(len(states))]
    p_shuf = precision_at_k(index, z, shuffled, shuffled, k=5, tol=3.0, exclude_self=True)
    assert p_shuf < 0.5
    # only the first state dim matters: clusters are separated along it
    assert precision_at_k(index, z, states, states, k=5, tol=3.0, dims=[0],
                          exclude_self=True) == 1.0


def test_exclude_self_and_same_episode():
    # pairs of identical frames (same episode, same state); episodes far apart in state
    base = np.random.default_rng(0).normal(size=(6, 3)) * 100
    z = np.repeat(base, 2, axis=0)
    states = np.repeat(np.arange(6.0)[:, None] * 10, 2, axis=0)
    groups = np.repeat(np.arange(6), 2)
    index = LatentIndex(z)
    q = z[::2]
    q_states = states[::2]
    qid = np.arange(0, 12, 2)
    # without exclusion the query finds itself (or its twin): both count as hits at k=2
    assert precision_at_k(index, q, q_states, states, k=2, tol=0.5) == 1.0
    # excluding itself leaves the twin as the single hit among k=2
    assert precision_at_k(index, q, q_states, states, k=2, tol=0.5, exclude_self=True,
                          query_ids=qid) == 0.5
    # excluding the whole episode leaves only other episodes: no hits
    assert precision_at_k(index, q, q_states, states, k=2, tol=0.5, exclude_self=True,
                          query_ids=qid, q_groups=groups[::2], db_groups=groups) == 0.0
    with pytest.raises(JepalabError, match="fewer than k"):
        precision_at_k(index, q, q_states, states, k=11, tol=0.5, q_groups=groups[::2],
                       db_groups=groups)
    with pytest.raises(JepalabError, match="both or neither"):
        precision_at_k(index, q, q_states, states, k=1, tol=0.5, q_groups=groups[::2])


def test_knn_probe_predicts_neighbour_means():
    z, states = _clusters()
    np.testing.assert_allclose(knn_probe(z, states, z, k=1), states)
    pred = knn_probe(z[::2], states[::2], z[1::2], k=3)
    assert np.abs(pred - states[1::2]).max() < 2.0  # right cluster, within its spread
    w = knn_probe(z, states[:, 0], z + 1e-3, k=3, weighted=True)
    assert w.shape == (len(z), 1)


def test_label_efficiency_with_knn_head():
    z, states = _clusters(per=40)
    perm = np.random.default_rng(0).permutation(len(z))
    tr, te = perm[:150], perm[150:]
    pts = label_efficiency(z[tr], states[tr], z[te], states[te], budgets=(3, 150),
                           head="knn", head_kwargs={"k": 3})
    assert pts[1].mean_error < pts[0].mean_error


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"jepalab\[retrieval\]"):
        LatentIndex(np.zeros((2, 2)))
    with pytest.raises(JepalabError, match=r"jepalab\[retrieval\]"):
        LatentIndex(np.zeros((2, 2)))
