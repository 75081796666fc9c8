"""Chapter 8's tools (course_lib/decoder_only.py) and its experiments (benchmarks/decoder_only_*.py)
on reduced settings: masks, the prefix LM on GPT-2, rank, training signal, KV-cache bytes, and
FLOP counts checked against torch.utils.flop_counter on the course's own models."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib import decoder_only as do
from course_lib.kernels import force_backend
from course_lib.models.bert import BertConfig, BertForMaskedLM
from course_lib.models.gpt2 import GPT2Config, GPT2LMHeadModel
from course_lib.pretraining import mask_tokens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _torch_backend():
    with force_backend("torch"):
        yield


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


# ---- masks -----------------------------------------------------------------------------------


def test_the_four_masks():
    n_in, n_out = 3, 2
    bi, causal, prefix, ed = (do.attention_mask(k, n_in, n_out) for k in do.KINDS)
    assert bi.all() and bi.shape == (5, 5) and bi.dtype == torch.bool
    assert torch.equal(causal, torch.ones(5, 5, dtype=torch.bool).tril())
    # prefix: the input block is all visible, the input never sees the output, the output is causal
    assert prefix[:, :n_in].all() and not prefix[:n_in, n_in:].any()
    assert torch.equal(prefix[n_in:, n_in:], torch.ones(2, 2, dtype=torch.bool).tril())
    assert torch.equal(prefix, ed)  # same visibility, different weights
    blocks = do.encoder_decoder_blocks(n_in, n_out)
    assert blocks["encoder self-attention"].all() and blocks["cross-attention"].shape == (n_out, n_in)
    assert torch.equal(blocks["decoder self-attention"], torch.ones(2, 2, dtype=torch.bool).tril())
    # degenerate prefixes: no input = causal, no output = bidirectional
    assert torch.equal(do.attention_mask("prefix", 0, 4), do.attention_mask("causal", 0, 4))
    assert do.attention_mask("prefix", 4, 0).all()
    assert do.attention_mask("causal", 0, 0).shape == (0, 0)


def test_mask_errors_name_the_argument():
    with pytest.raises(ValueError, match="kind must be one of"):
        do.attention_mask("sideways", 2, 2)
    with pytest.raises(ValueError, match="n_output must be a non-negative int"):
        do.attention_mask("causal", 2, -1)
    with pytest.raises(ValueError, match="prefix_lengths must lie in"):
        do.prefix_visibility(torch.tensor([5]), 4)


def test_batched_prefix_visibility_matches_the_joint_mask():
    vis = do.prefix_visibility(torch.tensor([0, 2, 5]), 5)
    assert vis.shape == (3, 1, 5, 5)
    for b, p in enumerate((0, 2, 5)):
        assert torch.equal(vis[b, 0], do.attention_mask("prefix", p, 5 - p))


def test_prefix_lm_on_gpt2(gpt2):
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        causal = gpt2.transformer(ids).last_hidden_state
        # prefix length 0 is GPT-2 itself, exactly
        assert torch.equal(do.prefix_lm_forward(gpt2, ids, torch.zeros(3, dtype=torch.long)), causal)
        p = torch.tensor([0, 5, 12])
        h = do.prefix_lm_forward(gpt2, ids, p)
        assert torch.equal(h[0], causal[0])
        assert (h[1, :4] - causal[1, :4]).abs().max() > 1e-3  # prefix positions see their right context
        changed = ids.clone()
        changed[1, 8] = (changed[1, 8] + 1) % 97  # a token after row 1's prefix
        h2 = do.prefix_lm_forward(gpt2, changed, p)
        assert torch.equal(h2[1, :8], h[1, :8])  # nothing before it may see it
        # the cache: generating after the prefix equals running the longer prefix-LM input
        hp, past = do.prefix_lm_forward(gpt2, ids[:, :6], torch.full((3,), 6), use_cache=True)
        step = gpt2(ids[:, 6:8], past_key_values=past, use_cache=True)
        full = do.prefix_lm_forward(gpt2, ids[:, :8], torch.full((3,), 6))
        torch.testing.assert_close(step.logits, gpt2.lm_head(full[:, 6:8]), rtol=1e-5, atol=1e-5)
        hidden, probs = do.prefix_lm_forward(gpt2, ids, p, output_attentions=True)
    assert len(probs) == 2 and probs[0].shape == (3, 4, 12, 12)
    assert (probs[0][1, :, :5, 5:] == 0).all() and (probs[0][1, :, 0, 1:5] > 0).all()
    with pytest.raises(ValueError, match="prefix_lengths must have shape"):
        do.prefix_lm_forward(gpt2, ids, torch.tensor([1, 2]))


def test_prefix_lm_gradients_flow(gpt2):
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2))
    gpt2.zero_grad()
    do.prefix_lm_forward(gpt2, ids, torch.tensor([3, 0])).sum().backward()
    assert all(p.grad is not None for p in gpt2.transformer.h.parameters())
    gpt2.zero_grad()


# ---- rank --------------------------------------------------------------------------------------


def test_numerical_rank_and_effective_rank():
    g = torch.Generator().manual_seed(0)
    for r in (1, 3, 7):
        A = torch.randn(9, r, generator=g, dtype=torch.float64) @ torch.randn(r, 11, generator=g, dtype=torch.float64)
        assert do.numerical_rank(A) == r == int(torch.linalg.matrix_rank(A))
    batch = torch.randn(4, 6, 6, generator=g)
    assert torch.equal(do.numerical_rank(batch), torch.linalg.matrix_rank(batch))
    assert do.numerical_rank(torch.zeros(3, 4)) == 0
    assert do.numerical_rank(torch.diag(torch.tensor([1.0, 1e-2, 1e-5])), rtol=1e-3) == 2
    assert do.effective_rank(torch.eye(5, dtype=torch.float64)) == pytest.approx(5)
    assert do.effective_rank(torch.ones(4, 6)) == pytest.approx(1)
    with pytest.raises(ValueError, match="A must be a floating-point tensor"):
        do.numerical_rank(torch.ones(3, 3, dtype=torch.long))


def test_causal_attention_is_triangular_with_positive_diagonal():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(2))
    A = do.attention_probabilities(q, k, do.attention_mask("causal", 6))
    assert torch.equal(A, A.tril()) and (A.diagonal() > 0).all()
    torch.testing.assert_close(A.sum(-1), torch.ones(6, dtype=torch.float64))
    assert torch.linalg.det(A) == pytest.approx(float(A.diagonal().prod()))  # det = product of the diagonal > 0
    B = do.attention_probabilities(q, k)  # bidirectional: a dense row-stochastic matrix
    assert (B > 0).all()
    rows = do.random_attention_ranks([8, 32], head_size=4, score_std=1.0)
    assert [(r["T"], r["mask"]) for r in rows] == [(8, "bidirectional"), (8, "causal"), (32, "bidirectional"),
                                                   (32, "causal")]
    assert all(1 <= r["numerical_rank"] <= r["T"] for r in rows)


# ---- training signal ------------------------------------------------------------------------


def test_loss_tokens_against_the_objectives_as_implemented():
    assert do.loss_tokens("clm", 64) == {"input_length": 64, "target_length": 63, "text_tokens_predicted": 63}
    assert do.loss_tokens("prefix", 64)["target_length"] == 32
    assert do.loss_tokens("mlm", 512)["text_tokens_predicted"] == 77
    # T5: 512 tokens, 15%, mean span 3 -> 77 noise tokens in 26 spans, EOS on both sides
    span = do.loss_tokens("span", 512)
    assert span == {"input_length": 512 - 77 + 26 + 1, "target_length": 77 + 26 + 1, "text_tokens_predicted": 77}
    # ... T5's own pipeline cuts 568 tokens into inputs of 512 and targets of 114
    assert (do.loss_tokens("span", 568)["input_length"], do.loss_tokens("span", 568)["target_length"]) == (512, 114)
    with pytest.raises(ValueError, match="n_tokens >= 2"):
        do.loss_tokens("span", 1)
    # measured: BERT's masking selects 15% on average (Chapter 4's mask_tokens)
    ids = torch.randint(5, 100, (256, 64), generator=torch.Generator().manual_seed(0))
    _, labels = mask_tokens(ids, vocab_size=100, mask_token_id=4, special_token_ids=range(5),
                            generator=torch.Generator().manual_seed(1))
    assert do.count_loss_tokens(labels) / ids.numel() == pytest.approx(0.15, abs=0.01)
    with pytest.raises(ValueError, match="objective must be one of"):
        do.loss_tokens("xlnet", 10)


def test_span_corruption_of_the_experiment_has_the_formula_lengths():
    from benchmarks.decoder_only_equal_compute import EncoderDecoder
    from course_lib.span_corruption import undo_span_corruption

    arch = EncoderDecoder(type("A", (), {"window": 64})(), None, "span")
    arch.sentinels, arch.eos = list(range(50, 66)), 3
    x = torch.randint(5, 50, (4, 64), generator=torch.Generator().manual_seed(0))
    inputs, targets = arch.span_corrupt(x, torch.Generator().manual_seed(0))
    n = do.loss_tokens("span", 64)
    assert inputs.shape == (4, n["input_length"]) and targets.shape == (4, n["target_length"])
    for row, inp, tgt in zip(x, inputs, targets):  # the corruption is undone exactly (Chapter 7)
        assert torch.equal(undo_span_corruption(inp, tgt, arch.sentinels, arch.eos), row)
        assert int(inp[-1]) == int(tgt[-1]) == 3


# ---- KV cache and FLOPs -----------------------------------------------------------------------


def test_kv_cache_bytes_equal_gpt2s_cache(gpt2):
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        past = gpt2(ids, use_cache=True).past_key_values
    c = gpt2.config
    assert do.cache_bytes(past) == do.kv_cache_bytes(c.n_layer, c.n_head, c.head_size, 9, batch=2, bytes_per_element=4)
    # GPT-2 small at 1024 positions in fp16: 36 MiB per sequence
    assert do.kv_cache_bytes(12, 12, 64, 1024) == 36 * 2**20
    assert do.dialogue_tokens([(3, 2), (4, 1)], "decoder") == [5, 5]
    assert do.dialogue_tokens([(3, 2), (4, 1)], "prefix") == [5, 10]


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_forward_flops_equal_the_flop_counter_on_the_course_models(gpt2):
    ids = torch.randint(0, 97, (1, 20))
    s = do.TransformerShape.from_config(gpt2.config)
    assert _counted(lambda: gpt2(ids)) == do.forward_flops(s, 0, 20)
    assert _counted(lambda: gpt2.lm_head(do.prefix_lm_forward(gpt2, ids, torch.tensor([8]))[:, 8:])) == \
        do.forward_flops(s, 8, 12, logits=12)
    bert = BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=48, max_position_embeddings=32)).eval()
    sb = do.TransformerShape.from_config(bert.config)
    assert _counted(lambda: bert(ids)) == do.forward_flops(sb, 20, 0)
    # training ~ 3 x forward (the backward's two matmuls per weight)
    gpt2.zero_grad()
    train = _counted(lambda: gpt2(ids, labels=ids).loss.backward())
    gpt2.zero_grad()
    assert train == pytest.approx(do.training_flops(s, 0, 20), rel=0.02)
    # visible-pair counting: a causal mask halves (plus the diagonal) the attention FLOPs
    dense, visible = (do.forward_flops(s, 0, 20, attention=a) for a in ("dense", "visible"))
    assert dense - visible == s.n_decoder_layers * 4 * s.d_attn * (400 - 210)


def test_encoder_decoder_flops_are_those_of_a_decoder_of_one_side():
    """Raffel et al. (2020, §3.2.2): L + L encoder-decoder ~ 2x the parameters of an L-layer
    decoder, about its FLOPs on a text split in two halves."""
    dec = do.TransformerShape(64, 4, 16, 256, 1000, n_decoder_layers=4)
    ed = do.TransformerShape(64, 4, 16, 256, 1000, n_encoder_layers=4, n_decoder_layers=4, cross_attention=True)
    assert ed.parameters() / dec.parameters() == pytest.approx(2 + 4 * 4 * 64 * 64 / dec.parameters())
    ratio = do.forward_flops(ed, 32, 32) / do.forward_flops(dec, 0, 64)
    assert 0.9 < ratio < 1.25
    assert do.forward_flops(ed, 32, 32) < 0.6 * do.forward_flops(dataclass_replace(dec, n_decoder_layers=8), 0, 64)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_t5_flops_when_chapter_7_exists():
    t5 = pytest.importorskip("course_lib.models.t5")
    config = t5.T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                         num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0)
    model = t5.T5ForConditionalGeneration(config).eval()
    src, tgt = torch.randint(0, 97, (1, 11)), torch.randint(0, 97, (1, 7))
    tgt[:, 0] = config.decoder_start_token_id
    counted = _counted(lambda: model(input_ids=src, decoder_input_ids=tgt))
    expected = do.forward_flops(do.TransformerShape.from_config(config), 11, 7)
    assert counted == expected


# ---- the experiments, reduced -----------------------------------------------------------------


def test_equal_compute_experiment_reduced(tmp_path):
    from benchmarks import decoder_only_equal_compute as ec

    out = tmp_path / "ec.json"
    ec.main(["--budgets", "3e8", "--seeds", "1", "--max-sentences", "1500", "--vocab", "300", "--eval-windows", "12",
             "--d-model", "16", "--layers", "1", "--heads", "2", "--batch", "4", "--window", "48", "--out", str(out)])
    res = json.loads(out.read_text())
    assert {"command", "commit", "machine", "date"} <= set(res["provenance"])
    names = [r["arch"] for r in res["runs"]]
    assert {"decoder (CLM)", "prefix LM (PLM)", "encoder (MLM)"} <= set(names)
    for r in res["runs"]:
        assert r["train_flops"] <= 3e8 and r["steps"] >= 1
        assert 0 <= r["zero_shot_continuation_acc"] <= 1 and 0 <= r["zero_shot_swap_acc"] <= 1
        assert r["ranks"]["attention_effective_rank"] >= 1
    assert all(0 < r["continuation_loss"] < 10 for r in res["runs"] if r["arch"] != "encoder (MLM)")
    assert [x["steps"]["n"] for x in res["summary"] if x["arch"] == "decoder (CLM)"] == [1]


def test_kv_cache_experiment_reduced(tmp_path):
    from benchmarks import decoder_only_kv_cache as kv

    out = tmp_path / "kv.json"
    kv.main(["--turns", "3", "--user", "5", "--reply", "3", "--d-model", "16", "--layers", "2", "--heads", "2",
             "--vocab", "50", "--repeats", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["cache"]["measured_bytes"] == res["cache"]["formula_bytes"]
    assert res["exactness"]["decoder_max_abs_change"] < 1e-6 < res["exactness"]["prefix_lm_max_abs_change"]
    for design, formula in (("decoder, cache kept", "decoder"), ("prefix LM", "prefix")):
        run = [r["tokens_run"] for r in res["per_turn"] if r["design"] == design]
        assert run == res["formula_tokens"][formula] == do.dialogue_tokens([(5, 3)] * 3, formula)


@pytest.mark.parametrize("name", ["decoder_only_equal_compute", "decoder_only_kv_cache"])
def test_committed_results_have_provenance(name):
    path = os.path.join(ROOT, "benchmarks", "results", f"{name}.json")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run python -m benchmarks.{name} and commit its output")
    res = json.load(open(path))
    assert res["experiment"] == name
    assert {"command", "commit", "machine", "date"} <= set(res["provenance"])
