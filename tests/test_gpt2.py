"""course_lib.models.gpt2 against Hugging Face transformers, offline.

Each checkpoint is a randomly initialised HF ``GPT2LMHeadModel`` (biases and LayerNorms
randomised too) saved with ``save_pretrained`` and loaded with course_lib: logits, hidden
states, HF's shifted loss and every gradient must agree (float32: max abs difference <= 1e-5;
run with -s to see the measured differences). The KV cache is checked against the full
forward pass, one token at a time, with and without left padding.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import gpt2 as cg  # noqa: E402
from tests.hf_checkpoints import checkpoint_cache, max_diff, random_hf_model  # noqa: E402

ATOL = 1e-5
CONFIGS = {  # odd vocabularies and widths, both GELU names, 1-3 layers, the layer-scaled attention variant
    "c48-h4-L2": dict(vocab_size=97, n_positions=40, n_embd=48, n_layer=2, n_head=4, n_inner=37),
    "c32-h2-L3-scaled": dict(vocab_size=61, n_positions=32, n_embd=32, n_layer=3, n_head=2, layer_norm_epsilon=1e-6,
                             scale_attn_by_inverse_layer_idx=True, activation_function="gelu_pytorch_tanh"),
    "c24-h3-L1-relu": dict(vocab_size=50, n_positions=24, n_embd=24, n_layer=1, n_head=3, activation_function="relu"),
}
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: with 2 OpenMP threads on a busy machine each costs ~2 ms of thread wake-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hf_model(name, head="GPT2LMHeadModel"):
    config = transformers.GPT2Config(**CONFIGS[name], bos_token_id=1, eos_token_id=2)
    return random_hf_model(getattr(transformers, head), config, f"{head}/{name}", norms=(".ln_",))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(config, head) -> (HF model, directory it was saved in), built once per module."""
    get = checkpoint_cache(tmp_path_factory, hf_model)
    return lambda name, head="GPT2LMHeadModel": get(name, head)


def batch(name, B=3, T=13, seed=0, padding=None):
    """ids (B, T) and a mask: padding None, "right" (lengths T, 7, 1) or "left"."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CONFIGS[name]["vocab_size"], (B, T), generator=g)
    if padding is None:
        return ids, None
    lengths = torch.tensor([T, 7, 1][:B])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    if padding == "left":
        mask = mask.flip(1)
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_loss_match_hf(name, padding, checkpoints):
    hf, path = checkpoints(name)
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, mask = batch(name, padding=padding)
    labels = ids.masked_fill(mask == 0, -100) if mask is not None else ids
    with torch.no_grad(), backend.force_backend("torch"):
        got = ours(ids, attention_mask=mask, labels=labels)
    want = hf(input_ids=ids, attention_mask=mask, labels=labels)
    # Positions that see no real key (left padding) are zeros here and HF's uniform average there:
    # their outputs are never used, so only the real positions are compared.
    real = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
    d = max_diff(got.logits[real], want.logits[real])
    MEASURED[f"{name}/{padding}/logits"] = d
    MEASURED[f"{name}/{padding}/loss"] = abs(got.loss.item() - want.loss.item())
    print(f"{name:18s} padding={padding!s:6s} logits max|diff| = {d:.2e}, loss |diff| = {MEASURED[f'{name}/{padding}/loss']:.2e}")
    assert got.logits.shape == want.logits.shape and d <= ATOL
    if padding != "left":
        assert abs(got.loss.item() - want.loss.item()) <= ATOL


def test_base_model_matches_hf(checkpoints):
    hf, path = checkpoints("c48-h4-L2", "GPT2Model")
    ours = cg.GPT2Model.from_pretrained(path).eval()
    ids, mask = batch("c48-h4-L2", padding="right")
    with torch.no_grad(), backend.force_backend("torch"):
        got = ours(ids, attention_mask=mask).last_hidden_state
    want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    assert max_diff(got, want) <= ATOL


def test_state_dict_is_hf_layout(checkpoints):
    hf, path = checkpoints("c48-h4-L2")
    ours = cg.GPT2LMHeadModel.from_pretrained(path)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert sorted(ours.state_dict()) == sorted(hf.state_dict())
    for key, value in hf.state_dict().items():  # Conv1D weights stay (in, out): a plain copy
        assert ours.state_dict()[key].shape == value.shape, key
    assert ours.transformer.h[0].attn.c_attn.weight.shape == (48, 3 * 48)
    assert ours.lm_head.weight is ours.transformer.wte.weight  # tied


@pytest.mark.parametrize("name", ["c48-h4-L2", "c32-h2-L3-scaled"])
def test_gradients_match_hf(name, checkpoints):
    hf, path = checkpoints(name)
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    hf.zero_grad()
    ids, mask = batch(name, padding="right")
    labels = ids.masked_fill(mask == 0, -100)
    with backend.force_backend("torch"):
        ours(ids, attention_mask=mask, labels=labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert sorted(ours_grads) == sorted(hf_grads)
    scale = max(g.abs().max().item() for g in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    MEASURED[f"{name}/grad"] = worst
    print(f"{name}: gradients max|diff| / max|grad| = {worst:.2e}")
    for n in hf_grads:
        torch.testing.assert_close(ours_grads[n], hf_grads[n], rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{n}: {m}")


def test_fused_loss_equals_plain_loss_and_gradients(checkpoints):
    _, path = checkpoints("c48-h4-L2")
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, mask = batch("c48-h4-L2", padding="right")
    labels = ids.masked_fill(mask == 0, -100)
    results = []
    for fused in (False, True):
        ours.zero_grad()
        with backend.force_backend("torch"):
            out = ours(ids, attention_mask=mask, labels=labels, fused_loss=fused)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in ours.named_parameters()}))
    (plain, g_plain), (fused, g_fused) = results
    assert fused.logits is None and plain.logits is not None
    assert abs(plain.loss.item() - fused.loss.item()) <= 1e-6
    for n in g_plain:
        torch.testing.assert_close(g_fused[n], g_plain[n], rtol=1e-5, atol=1e-6)


@pytest.mark.interpreter
def test_matches_hf_with_triton_kernels(checkpoints):
    hf, path = checkpoints("c48-h4-L2")
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, mask = batch("c48-h4-L2", B=2, T=9, padding="right")
    labels = ids.masked_fill(mask == 0, -100)
    with backend.force_backend("triton"):
        got = ours(ids, attention_mask=mask, labels=labels)
        got.loss.backward()
        fused = ours(ids, attention_mask=mask, labels=labels, fused_loss=True).loss
    want = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert max_diff(got.logits, want.logits) <= ATOL
    assert abs(got.loss.item() - want.loss.item()) <= ATOL and abs(fused.item() - want.loss.item()) <= ATOL


# ---- the KV cache -----------------------------------------------------------------------


@pytest.mark.parametrize("padding", [None, "left"])
def test_cached_decoding_equals_full_forward(padding, checkpoints):
    """Feeding the sequence one token at a time with the cache gives the logits of the full
    forward pass at every (real) position; so does a prompt of 5 followed by single tokens."""
    _, path = checkpoints("c32-h2-L3-scaled")
    model = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, mask = batch("c32-h2-L3-scaled", T=11, padding=padding)
    B, T = ids.shape
    if mask is not None:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    else:
        positions = torch.arange(T).expand(B, T)
    with torch.no_grad(), backend.force_backend("torch"):
        full = model(ids, attention_mask=mask, position_ids=positions).logits  # (B, T, V)
        for prefix in (1, 5):
            out = model(ids[:, :prefix], attention_mask=None if mask is None else mask[:, :prefix],
                        position_ids=positions[:, :prefix], use_cache=True)
            steps = [out.logits]
            past = out.past_key_values
            for t in range(prefix, T):
                out = model(ids[:, t : t + 1], attention_mask=None if mask is None else mask[:, : t + 1],
                            position_ids=positions[:, t : t + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                steps.append(out.logits)
            cached = torch.cat(steps, dim=1)
            real = mask.bool() if mask is not None else torch.ones(B, T, dtype=torch.bool)
            d = max_diff(cached[real], full[real])
            MEASURED[f"cache/{padding}/prefix{prefix}"] = d
            assert d <= ATOL, f"prefix {prefix}: {d:.2e}"
            assert len(past) == 3 and past[0][0].shape == (B, 2, T, 16)


def test_default_positions_continue_after_the_cache(checkpoints):
    _, path = checkpoints("c48-h4-L2")
    model = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, _ = batch("c48-h4-L2", B=2, T=6)
    with torch.no_grad(), backend.force_backend("torch"):
        full = model(ids).logits
        past = model(ids[:, :4], use_cache=True).past_key_values
        tail = model(ids[:, 4:], past_key_values=past).logits
    assert max_diff(tail, full[:, 4:]) <= ATOL


def random_bias(B, nh, T, Tk, seed, hide=0.3):
    """A head-dependent additive bias (B, nh, T, Tk) with some keys hidden (-inf); key 0 is
    always visible, so no row is empty."""
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(B, nh, T, Tk, generator=g)
    bias = bias.masked_fill(torch.rand(B, 1, T, Tk, generator=g) < hide, float("-inf"))
    bias[..., 0] = 0.0
    return bias


@pytest.mark.parametrize("causal", [False, True])
def test_attention_bias_matches_hf_custom_4d_mask(causal, checkpoints):
    """``bias=`` (not in HF's GPT-2 signature) against HF's own way to pass one: a float 4-D
    ``attention_mask``, which HF's eager attention adds to the scores in place of its causal
    mask. With causal=True ours adds the causal mask too, so HF gets the bias with -inf above
    the diagonal. Logits and the bias's gradient must agree."""
    _, path = checkpoints("c48-h4-L2")
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, _ = batch("c48-h4-L2", B=2, T=9, seed=3)
    bias = random_bias(2, 4, 9, 9, seed=4)
    hf_bias = bias.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf")) if causal else bias
    with backend.force_backend("torch"):
        mine = bias.clone().requires_grad_()
        got = ours(ids, bias=mine, causal=causal).logits
        theirs = hf_bias.clone().requires_grad_()
        want = hf(input_ids=ids, attention_mask=theirs).logits
        weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
        (got * weights).sum().backward()
        (want * weights).sum().backward()
    d = max_diff(got, want)
    visible = hf_bias.isfinite()
    dg = max_diff(mine.grad[visible], theirs.grad[visible])
    MEASURED[f"bias/causal={causal}/logits"], MEASURED[f"bias/causal={causal}/grad"] = d, dg
    assert d <= ATOL and dg <= ATOL, (d, dg)
    assert max_diff(got, ours(ids).logits) > 1e-3  # the bias did change the output
    if causal:  # hidden by the causal mask: no gradient reaches those bias entries
        assert torch.equal(mine.grad[~visible], torch.zeros_like(mine.grad[~visible]))


def test_attention_bias_with_the_cache_and_the_causal_switch(checkpoints):
    """causal=False with the causal mask as a bias is GPT-2 itself; a bias that is the same for
    every layer also works one token at a time against the cache (its rows P..P+T-1)."""
    _, path = checkpoints("c32-h2-L3-scaled")
    model = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ids, _ = batch("c32-h2-L3-scaled", B=2, T=8, seed=6)
    from course_lib.kernels.flash_attention import causal_mask, visibility_bias

    with torch.no_grad(), backend.force_backend("torch"):
        plain = model(ids).logits
        as_bias = model(ids, bias=visibility_bias(causal_mask(8, 8))[None, None], causal=False).logits
        assert max_diff(as_bias, plain) <= ATOL
        bias = random_bias(1, 2, 8, 8, seed=7)  # broadcast over the batch
        full = model(ids, bias=bias).logits
        out = model(ids[:, :5], bias=bias[:, :, :5, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, 8):
            out = model(ids[:, t : t + 1], bias=bias[:, :, t : t + 1, : t + 1], past_key_values=out.past_key_values,
                        use_cache=True)
            steps.append(out.logits)
        d = max_diff(torch.cat(steps, dim=1), full)
        MEASURED["bias/cache"] = d
        assert d <= ATOL
        assert max_diff(full, plain) > 1e-3
    for bad in (torch.zeros(2, 3, 8, 8), torch.zeros(8, 7), torch.zeros(1, 1, 8, 8, dtype=torch.long), [[0.0]]):
        with pytest.raises(ValueError, match=r"bias must be a floating-point tensor broadcastable to \(B, nh, T, P \+ T\)"):
            model(ids, bias=bad)


# ---- loading, parameters, errors ----------------------------------------------------------


def test_old_checkpoint_buffers_are_dropped(checkpoints, tmp_path):
    """Checkpoints from older transformers (and OpenAI's conversion) store the causal mask as
    buffers attn.bias / attn.masked_bias in pytorch_model.bin: dropped, nothing unexpected."""
    hf, path = checkpoints("c24-h3-L1-relu")
    state = dict(hf.state_dict())
    state.pop("lm_head.weight")  # old checkpoints stored the tied head once
    state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(24, 24)).view(1, 1, 24, 24)
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    bare = {k.removeprefix("transformer."): v for k, v in state.items()}  # a GPT2Model-style checkpoint
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(bare, tmp_path / "pytorch_model.bin")
    ours = cg.GPT2LMHeadModel.from_pretrained(tmp_path, strict=True)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    ids, _ = batch("c24-h3-L1-relu")
    with torch.no_grad(), backend.force_backend("torch"):
        assert max_diff(ours.eval()(ids).logits, hf(input_ids=ids).logits) <= ATOL


def test_save_pretrained_round_trips_through_hf(checkpoints, tmp_path):
    hf, path = checkpoints("c48-h4-L2")
    ours = cg.GPT2LMHeadModel.from_pretrained(path).eval()
    ours.save_pretrained(tmp_path)
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, _ = batch("c48-h4-L2")
    with torch.no_grad():
        assert max_diff(again(input_ids=ids).logits, hf(input_ids=ids).logits) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_embd"] == 48


@pytest.mark.parametrize("kwargs, expected", [(dict(), 124_439_808), (dict(n_embd=1024, n_layer=24, n_head=16), 354_823_168)])
def test_parameter_counts(kwargs, expected):
    with torch.device("meta"):
        ours = cg.GPT2LMHeadModel(cg.GPT2Config(**kwargs))
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    assert ours.num_parameters() == hf.num_parameters() == expected
    assert cg.parameter_count(cg.GPT2Config(**kwargs))["total"] == expected


def test_config_aliases_and_errors():
    assert cg.GPT2Config.from_dict({"hidden_size": 64, "num_attention_heads": 4}).n_embd == 64
    with pytest.raises(ValueError, match="multiple of n_head"):
        cg.GPT2Config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="add_cross_attention"):
        cg.GPT2Config.from_dict({"add_cross_attention": True})
    model = cg.GPT2LMHeadModel(cg.GPT2Config(**CONFIGS["c24-h3-L1-relu"]))
    with pytest.raises(ValueError, match="exceed n_positions = 24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, P \+ T\) = \(2, 5\)"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="position_ids must lie in"):
        model(torch.zeros(1, 3, dtype=torch.long), position_ids=torch.tensor([[0, 1, 24]]))
    with pytest.raises(ValueError, match="labels must have input_ids' shape"):
        model(torch.zeros(1, 3, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(torch.zeros(3))


def test_zz_report_measured_differences():
    if not MEASURED:
        pytest.skip("run together with the parity tests")
    print(f"\nGPT-2 parity over {len(MEASURED)} comparisons: max |diff| = {max(MEASURED.values()):.2e}")


# ---- course_lib.lm: training and perplexity ----------------------------------------------

from course_lib import lm  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    return cg.GPT2LMHeadModel(cg.GPT2Config(vocab_size=11, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()


def test_sliding_window_perplexity_against_direct_sums(tiny_lm):
    ids = torch.randint(0, 11, (37,), generator=torch.Generator().manual_seed(0))
    with backend.force_backend("torch"):
        # One window holding everything: exp of the mean NLL of tokens 1..15 given all before.
        short = ids[:16]
        direct = lm.token_nll(tiny_lm, short[None]).mean().exp().item()
        assert lm.sliding_window_perplexity(tiny_lm, short, 16, 16)["perplexity"] == pytest.approx(direct, rel=1e-6)
        # Disjoint chunks (stride = max_length), HF's guide: each chunk scores its tokens after its
        # first (the first has no context inside the window), 15 + 15 + 4 tokens.
        nll = torch.cat([lm.token_nll(tiny_lm, ids[i : i + 16][None])[0] for i in range(0, 37, 16)])
        got = lm.sliding_window_perplexity(tiny_lm, ids, 16, 16)
        assert got["tokens"] == 34 == nll.numel() and got["windows"] == 3
        assert got["nll"] == pytest.approx(nll.mean().item(), rel=1e-5)
        # Overlapping windows (stride 4): after the first window, each scores only its last 4
        # tokens with 12..15 tokens of context: every token after the first, exactly once.
        moving = lm.sliding_window_perplexity(tiny_lm, ids, 16, 4)
        assert moving["tokens"] == 36 and moving["windows"] == 7
        last = lm.token_nll(tiny_lm, ids[24:37][None])[0, -1]  # the 7th window scores token 36 only
        fifth = lm.token_nll(tiny_lm, ids[16:32][None])[0, -4:]  # the 5th window scores tokens 28..31
        assert torch.isfinite(last) and fifth.numel() == 4
    with pytest.raises(ValueError, match="stride must be in"):
        lm.sliding_window_perplexity(tiny_lm, ids, 16, 17)


def test_char_tokenizer_blocks_and_training_lowers_the_loss():
    text = "abcab cabca bcabc " * 40
    tok = lm.CharTokenizer(text)
    assert len(tok) == 4 and tok.decode(tok.encode("cab ")) == "cab "
    with pytest.raises(ValueError, match="outside the alphabet"):
        tok.encode("abz")
    blocks = lm.token_blocks(tok.encode(text), 16)
    assert blocks.shape == (45, 16)
    torch.manual_seed(0)
    model = cg.GPT2LMHeadModel(cg.GPT2Config(vocab_size=4, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    with backend.force_backend("torch"):
        history = lm.train_causal_lm(model, blocks, lm.LMTrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5,
                                                                      log_every=10), progress=False)
    assert history[0]["loss"] > 1.2 and history[-1]["loss"] < 0.8  # the pattern is periodic: learnable
    with pytest.raises(ValueError, match="block_size must be in"):
        lm.token_blocks([1, 2], 3)
