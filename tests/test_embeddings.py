"""course_lib.embeddings against torch: one-hot, lookup = one_hot @ W, cosine
similarity, nearest neighbours, PCA, and Embedding as a drop-in for nn.Embedding."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.embeddings import (
    Embedding,
    cosine_similarity_matrix,
    lookup_as_matmul,
    nearest_neighbours,
    one_hot,
    pca,
)
from course_lib.kernels import force_backend


def test_one_hot_matches_torch():
    ids = torch.tensor([[0, 3, 2], [4, 4, 1]])
    got = one_hot(ids, 5)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 5)
    assert torch.equal(got, F.one_hot(ids, 5).float())
    assert one_hot(ids, 5, dtype=torch.float64).dtype == torch.float64


def test_one_hot_vectors_are_orthogonal():
    e = one_hot(torch.arange(6), 6)
    assert torch.equal(e @ e.T, torch.eye(6))  # no two words are more similar than any other two


@pytest.mark.parametrize("bad, err", [(torch.tensor([5]), IndexError), (torch.tensor([-1]), IndexError),
                                      (torch.tensor([0.0]), TypeError)])
def test_one_hot_rejects_bad_ids(bad, err):
    with pytest.raises(err, match="ids"):
        one_hot(bad, 5)


def test_lookup_as_matmul_equals_indexing():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(11, 7, generator=g)
    ids = torch.randint(0, 11, (4, 3), generator=g)
    assert torch.equal(lookup_as_matmul(ids, W), W[ids])  # one nonzero term per sum: exact, not just close
    W64 = W.double()
    assert torch.equal(lookup_as_matmul(ids, W64), W64[ids])


def test_cosine_similarity_matches_torch():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 9, generator=g), torch.randn(4, 9, generator=g)
    want = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)
    torch.testing.assert_close(cosine_similarity_matrix(a, b), want)
    self_sim = cosine_similarity_matrix(a)
    torch.testing.assert_close(self_sim.diagonal(), torch.ones(5))
    torch.testing.assert_close(self_sim, self_sim.T)


def test_cosine_similarity_ignores_length_and_handles_zero_vectors():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(cosine_similarity_matrix(v, 10 * v), torch.ones(1, 1))
    z = cosine_similarity_matrix(torch.zeros(1, 3), v)
    assert torch.isfinite(z).all() and z.item() == 0.0


def test_cosine_similarity_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="same vector size"):
        cosine_similarity_matrix(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="dimensions"):
        cosine_similarity_matrix(torch.randn(3))


def test_nearest_neighbours_by_id_and_vector():
    W = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    ids, scores = nearest_neighbours(W, 0, k=3)
    assert ids.tolist() == [1, 4, 2]  # the query itself is excluded
    assert scores[0] > scores[1] > scores[2]
    ids_v, _ = nearest_neighbours(W, torch.tensor([1.0, 0.0]), k=2)
    assert ids_v.tolist() == [0, 1]  # a vector query excludes nothing
    ids_x, _ = nearest_neighbours(W, 0, k=2, exclude=[1])
    assert ids_x.tolist() == [4, 2]


def test_nearest_neighbours_ties_and_errors():
    W = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    assert nearest_neighbours(W, 0, k=2)[0].tolist() == [1, 2]  # equal scores: lower id first
    with pytest.raises(IndexError, match="query id 9"):
        nearest_neighbours(W, 9)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(W, 0, k=4)


def test_pca_recovers_a_line_and_is_sign_stable():
    t = torch.linspace(-1, 1, 20, dtype=torch.float64)
    x = torch.stack([t, 2 * t, -t], dim=1) + 5  # points on a line through (5, 5, 5)
    p = pca(x, k=2)
    assert p.shape == (20, 2)
    torch.testing.assert_close(p[:, 1], torch.zeros(20, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(p[:, 0].abs(), (t * 6 ** 0.5).abs())
    assert torch.equal(pca(x), pca(x.clone()))
    with pytest.raises(ValueError, match="k must be"):
        pca(x, k=4)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_state_dict_is_interchangeable_with_torch(padding_idx):
    torch.manual_seed(0)
    ref = torch.nn.Embedding(10, 6, padding_idx=padding_idx)
    ours = Embedding(10, 6, padding_idx=padding_idx)
    assert ours.padding_idx == ref.padding_idx
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"]
    ours.load_state_dict(ref.state_dict())
    ids = torch.tensor([[1, 2, 9], [2, 2, 0]])
    out, want = ours(ids), ref(ids)
    assert torch.equal(out, want)
    out.pow(2).sum().backward()
    want.pow(2).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    ref2 = torch.nn.Embedding(10, 6, padding_idx=padding_idx)
    ref2.load_state_dict(ours.state_dict())  # and back the other way
    assert torch.equal(ref2.weight, ref.weight)


def test_embedding_init_padding_row_is_zero_and_repr():
    e = Embedding(7, 3, padding_idx=-2)
    assert e.padding_idx == 5
    assert torch.count_nonzero(e.weight[5]) == 0
    assert repr(e) == "Embedding(7, 3, padding_idx=5)"
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(7, 3, padding_idx=7)


def test_embedding_from_pretrained_freezes_by_default():
    W = torch.randn(4, 2)
    e = Embedding.from_pretrained(W)
    assert not e.weight.requires_grad and torch.equal(e(torch.tensor([3])), W[3:4])
    assert Embedding.from_pretrained(W, freeze=False).weight.requires_grad


def test_embedding_same_result_on_both_backends():
    e = Embedding(13, 5, padding_idx=0)
    ids = torch.tensor([0, 12, 3, 3])
    with force_backend("torch"):
        a = e(ids)
    with force_backend("auto"):
        b = e(ids)
    assert torch.equal(a, b)


def test_nearest_neighbours_identical_rows_tie_exactly():
    g = torch.Generator().manual_seed(6)
    W = torch.randn(7, 10, generator=g)
    W[4] = W[1]
    ids, scores = nearest_neighbours(W, 0, k=6)
    pos1, pos4 = ids.tolist().index(1), ids.tolist().index(4)
    assert pos4 == pos1 + 1 and scores[pos1] == scores[pos4]
