"""XLNet's permutation-LM masks and two-stream attention; Transformer-XL's recurrence.

The masks are checked entry by entry against the paper's definitions (Yang et al., 2019,
section 2.3: the content stream of z_t sees x_{z_<=t}, the query stream sees x_{z_<t} and
its own position, never its own content) and, through Hugging Face's XLNet, against the
``perm_mask`` convention of a real implementation. Transformer-XL's memory is checked
against the unsegmented computation and its reach is measured."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from course_lib import xlnet as cx


pytestmark = pytest.mark.usefixtures("one_thread_torch_backend")  # conftest.py


@pytest.mark.parametrize("seed", range(4))
def test_masks_follow_the_definitions(seed):
    T = 7
    order = cx.factorisation_order(T, torch.Generator().manual_seed(seed))
    content, query = cx.permutation_masks(order)
    z = order.tolist()
    for t, i in enumerate(z):  # position i is predicted t-th
        for j in range(T):
            earlier = j in z[:t]
            assert query[i, j] == earlier, (i, j)  # x_{z<t}: strictly earlier tokens only
            assert content[i, j] == (earlier or j == i), (i, j)  # ... and its own token
    assert not query.diagonal().any() and content.diagonal().all()
    assert query[z[0]].sum() == 0 and content[z[-1]].all()  # the first sees nothing, the last everything


def test_identity_order_is_the_causal_mask():
    content, query = cx.permutation_masks(torch.arange(6))
    assert torch.equal(content, torch.ones(6, 6, dtype=torch.bool).tril())
    assert torch.equal(query, torch.ones(6, 6, dtype=torch.bool).tril(-1))


def test_batched_orders_ranks_and_partial_prediction():
    orders = torch.stack([torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])])
    assert cx.order_ranks(orders).tolist() == [[1, 3, 0, 2], [2, 0, 3, 1]]
    content, query = cx.permutation_masks(orders)
    assert content.shape == (2, 4, 4) and torch.equal(query[1], cx.permutation_masks(orders[1])[1])
    targets = cx.partial_prediction_targets(torch.arange(12), K=6)  # the last ceil(12/6) = 2 of the order
    assert targets.tolist() == [False] * 10 + [True] * 2
    assert cx.partial_prediction_targets(torch.tensor([3, 1, 0, 2]), K=2).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="order must be a permutation of 0..3"):
        cx.permutation_masks(torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="K must be >= 1"):
        cx.partial_prediction_targets(torch.arange(3), K=0.5)


def influence(fn, ids, i, j):
    """Does changing x_j change fn(ids)[:, i]?"""
    changed = ids.clone()
    changed[0, j] = (changed[0, j] + 1) % 50
    return (fn(changed)[0, i] - fn(ids)[0, i]).abs().max().item() > 1e-6


def test_two_stream_query_never_sees_its_own_token():
    torch.manual_seed(0)
    model = cx.TwoStreamLM(cx.TwoStreamConfig(vocab_size=50, n_positions=8, d_model=16, n_head=2, n_layer=2)).eval()
    T = 6
    ids = torch.randint(0, 50, (1, T))
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    ranks = cx.order_ranks(order)
    with torch.no_grad():
        def query(x):
            return model(x, order)[1]

        def content(x):
            return model(x, order)[0]

        for i in range(T):
            assert not influence(query, ids, i, i)  # the query stream predicting x_i cannot see x_i
            assert influence(content, ids, i, i)  # the content stream does
            for j in range(T):
                if j != i:  # exactly the tokens earlier in the order reach position i
                    assert influence(query, ids, i, j) == bool(ranks[j] < ranks[i]), (i, j)
    # The order changes the masks, not the positions: the same order in a batch of two gives the same logits.
    with torch.no_grad():
        both = model(torch.cat([ids, ids]), torch.stack([order, order]))[1]
    torch.testing.assert_close(both[0], both[1])


def test_hf_xlnet_reads_our_perm_mask_the_same_way():
    """HF's XLNetModel given hf_perm_mask(order): the query-stream output predicting position i
    is unchanged when x_i changes, and changes when a token earlier in the order does."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.XLNetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=2, d_inner=32, dropout=0.0)
    model = transformers.XLNetModel(config).eval()
    T = 5
    ids = torch.randint(0, 50, (1, T))
    order = torch.tensor([2, 4, 0, 3, 1])
    perm_mask = cx.hf_perm_mask(order)
    ranks = cx.order_ranks(order)
    target_mapping = torch.eye(T)[None]  # query streams for every position

    def query(x):
        return model(x, perm_mask=perm_mask, target_mapping=target_mapping).last_hidden_state

    with torch.no_grad():
        # Skipped: the first position of the order, whose query stream may see nothing at all.
        # HF adds -1e30 to masked scores, and a row masked everywhere becomes a uniform average
        # over every key, its own included (course_lib's kernel returns zeros for such a row).
        for i in order[1:].tolist():
            assert not influence(query, ids, i, i)
            for j in range(T):
                if j != i:
                    assert influence(query, ids, i, j) == bool(ranks[j] < ranks[i]), (i, j)


# ---- Transformer-XL --------------------------------------------------------------------------


def xl(n_layer, mem_len, seed=0):
    torch.manual_seed(seed)
    model = cx.TransformerXL(cx.TransformerXLConfig(vocab_size=50, d_model=16, n_head=2, n_layer=n_layer, d_inner=32,
                                                    mem_len=mem_len)).eval()
    with torch.no_grad():  # u, v start at 0: make them matter
        for layer in model.layers:
            layer.attn.r_w_bias.normal_()
            layer.attn.r_r_bias.normal_()
    return model


def test_one_layer_with_memory_equals_the_unsegmented_computation():
    """With one layer and a memory as long as the segment, segment 2 attends to exactly what
    the whole sequence's causal attention sees, at the same relative distances."""
    model = xl(n_layer=1, mem_len=6)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids).logits
        first = model(ids[:, :6])
        second = model(ids[:, 6:], first.mems)
    torch.testing.assert_close(first.logits, whole[:, :6], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second.logits, whole[:, 6:], rtol=1e-5, atol=1e-5)
    assert second.mems[0].shape == (2, 6, 16)


def test_memory_gets_no_gradient():
    model = xl(n_layer=2, mem_len=4).train()
    ids = torch.randint(0, 50, (1, 8))
    first = model(ids[:, :4])
    assert all(not m.requires_grad for m in first.mems)
    loss = model(ids[:, 4:], first.mems).logits.sum()
    loss.backward()  # would fail or flow into segment 1's graph if the memory were attached
    assert model.tok.weight.grad is not None


@pytest.mark.parametrize("n_layer, mem_len, expected", [(1, 0, 5), (1, 4, 9), (2, 4, 15), (3, 3, 20), (2, 6, 17)])
def test_context_reach_grows_with_layers(n_layer, mem_len, expected):
    """The last token of a segment of S = 6 sees its own segment (S - 1 back) and the memory
    (M more) at the top layer; each layer below adds a whole segment, since the oldest memory
    entry itself saw its own segment's start and that segment's memory: (S - 1) + M + (L - 1) S
    tokens back (M <= S), and nothing further. (Dai et al.'s O(N L), N the segment length.)"""
    reach = cx.context_reach(xl(n_layer, mem_len), segment_len=6, n_segments=4)
    assert reach[: expected + 1].all() and not reach[expected + 1 :].any()
