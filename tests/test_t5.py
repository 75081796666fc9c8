"""course_lib.models.t5 against Hugging Face transformers, offline.

Each checkpoint is a randomly initialised HF ``T5ForConditionalGeneration`` with odd sizes
(num_heads x d_kv != d_model, more decoder than encoder layers, several bucket settings;
its RMSNorm weights randomised too) saved with ``save_pretrained`` and loaded with
course_lib: logits, HF's loss (labels shifted right inside), hidden states and every
gradient must agree (float32: max abs difference <= 1e-5; run with -s to see them), with a
padded encoder input. The bucket function equals HF's; the decoder's KV cache (self and
cross) reproduces the full forward pass; ``generate`` equals HF's token for token.
"""

import functools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention  # noqa: E402

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import t5 as ct  # noqa: E402
from tests.hf_checkpoints import checkpoint_cache, max_diff, random_hf_model  # noqa: E402

ATOL = 1e-5
# relu + tied head (T5), gated-gelu + untied head (v1.1), odd bucket settings.
CONFIGS = {
    "relu-tied-b32": dict(vocab_size=71, d_model=20, d_kv=7, d_ff=33, num_layers=2, num_decoder_layers=3,
                          num_heads=3, feed_forward_proj="relu"),
    "gated-untied-b8": dict(vocab_size=64, d_model=24, d_kv=5, d_ff=19, num_layers=1, num_decoder_layers=2,
                            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                            feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "gated-tied-b7": dict(vocab_size=53, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2,
                          relative_attention_num_buckets=7, relative_attention_max_distance=9,
                          feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-5),
}
MEASURED: dict[str, float] = {}


pytestmark = pytest.mark.usefixtures("one_thread_torch_backend")  # conftest.py


def hf_model(name, head="T5ForConditionalGeneration"):
    def untie(model):  # v1.1: the head is its own matrix
        if not CONFIGS[name].get("tie_word_embeddings", True) and hasattr(model, "lm_head"):
            model.lm_head.weight = torch.nn.Parameter(0.3 * torch.randn_like(model.lm_head.weight))

    config = transformers.T5Config(**CONFIGS[name], decoder_start_token_id=0, attn_implementation="eager")
    return random_hf_model(getattr(transformers, head), config, f"{head}/{name}", norms=("layer_norm",),
                           biases=False, scale=0.2, extra=untie)  # T5 has no biases


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(config, head) -> (HF model as loaded back from its directory, ours loaded from it, the
    directory), built once per module."""
    get = checkpoint_cache(tmp_path_factory, hf_model)

    @functools.cache
    def load(name, head="T5ForConditionalGeneration"):
        _, path = get(name, head)
        hf = getattr(transformers, head).from_pretrained(path, attn_implementation="eager").eval()
        return hf, getattr(ct, head).from_pretrained(path).eval(), path

    return load


def batch(name, B=3, S=23, T=11, seed=0):
    """Encoder ids (B, S) right-padded to lengths S, 9, 1; labels (B, T) with -100 after 6 in row 1."""
    g = torch.Generator().manual_seed(seed)
    V = CONFIGS[name]["vocab_size"]
    ids = torch.randint(2, V, (B, S), generator=g)
    mask = (torch.arange(S)[None, :] < torch.tensor([S, 9, 1][:B])[:, None]).long()
    labels = torch.randint(2, V, (B, T), generator=g)
    labels[1, 6:] = -100
    return ids.masked_fill(mask == 0, 0), mask, labels


# ---- parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_loss_match_hf(name, checkpoints):
    hf, ours, _ = checkpoints(name)
    ids, mask, labels = batch(name)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, labels=labels)
        want = hf(input_ids=ids, attention_mask=mask, labels=labels)
    d = max_diff(got.logits, want.logits)
    MEASURED[f"{name}/logits"] = d
    print(f"{name:16s} logits max|diff| = {d:.2e}, loss |diff| = {abs(got.loss.item() - want.loss.item()):.2e}, "
          f"encoder max|diff| = {max_diff(got.encoder_last_hidden_state, want.encoder_last_hidden_state):.2e}")
    assert got.logits.shape == want.logits.shape and d <= ATOL
    assert max_diff(got.encoder_last_hidden_state, want.encoder_last_hidden_state) <= ATOL
    assert abs(got.loss.item() - want.loss.item()) <= ATOL


def test_decoder_attention_mask_and_base_model_match_hf(checkpoints):
    hf, ours, _ = checkpoints("relu-tied-b32", "T5Model")
    ids, mask, labels = batch("relu-tied-b32", seed=1)
    dec = ct.shift_right(labels, 0, 0)
    dec_mask = (labels != -100).long()
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    d = max_diff(got.last_hidden_state, want.last_hidden_state)
    MEASURED["T5Model/decoder"] = d
    print(f"T5Model decoder hidden states max|diff| = {d:.2e}")
    assert d <= ATOL
    assert max_diff(got.encoder_last_hidden_state, want.encoder_last_hidden_state) <= ATOL


@pytest.mark.parametrize("name", ["relu-tied-b32", "gated-untied-b8"])
def test_gradients_match_hf(name, checkpoints):
    hf, ours, _ = checkpoints(name)
    hf.zero_grad()
    ours.zero_grad()
    ids, mask, labels = batch(name, seed=2)
    ours(ids, attention_mask=mask, labels=labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert sorted(ours_grads) == sorted(hf_grads)  # relative_attention_bias of both stacks included
    scale = max(g.abs().max().item() for g in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    MEASURED[f"{name}/grad"] = worst
    print(f"{name}: gradients max|diff| / max|grad| = {worst:.2e}")
    for n in hf_grads:
        torch.testing.assert_close(ours_grads[n], hf_grads[n], rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{n}: {m}")


@pytest.mark.interpreter
def test_matches_hf_with_triton_kernels(checkpoints):
    """The RMSNorm kernels and the one attention kernel with T5's relative bias as its
    additive ``bias=`` (bidirectional in the encoder, causal in the decoder): logits, loss
    and the gradients of the bias tables and the norms equal HF's."""
    hf, ours, _ = checkpoints("gated-tied-b7")
    hf.zero_grad()
    ours.zero_grad()
    ids, mask, labels = batch("gated-tied-b7", B=2, S=9, T=5)
    with backend.force_backend("triton"):
        got = ours(ids, attention_mask=mask, labels=labels)
        got.loss.backward()  # RMSNorm and attention-with-bias backward kernels
    want = hf(input_ids=ids, attention_mask=mask, labels=labels)
    want.loss.backward()
    d = max_diff(got.logits, want.logits)
    MEASURED["triton/logits"] = d
    assert d <= ATOL and abs(got.loss.item() - want.loss.item()) <= ATOL
    hf_params = dict(hf.named_parameters())
    checked = 0
    for n, p in ours.named_parameters():
        if "relative_attention_bias" in n or "layer_norm" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
            torch.testing.assert_close(p.grad, hf_params[n].grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
            checked += 1
    assert checked == 2 + 2 * 2 + 2 * 3 + 2  # two bias tables, 2 + 3 norms per block, two final norms
    ours.zero_grad()
    hf.zero_grad()


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (7, 9), (4, 3), (64, 1000)])
def test_bucket_function_equals_hf(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-1500, 1500)
    if max_distance <= num_buckets // 2:
        with pytest.raises(ValueError, match="relative_attention_max_distance"):
            ct.check_buckets(num_buckets, max_distance)
        return
    want = HFT5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    got = ct.relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert torch.equal(got, want)
    assert 0 <= got.min() and got.max() < num_buckets


def test_state_dict_is_hf_layout_and_heads_tie_as_configured(checkpoints):
    hf, ours, path = checkpoints("relu-tied-b32")
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert sorted(ours.state_dict()) == sorted(hf.state_dict())
    assert ours.lm_head.weight is ours.shared.weight is ours.encoder.embed_tokens.weight
    assert ours.config.scale_decoder_outputs
    # Only the first block of each stack owns a relative bias table.
    assert [hasattr(b.layer[0].SelfAttention, "relative_attention_bias") for b in ours.decoder.block] == [1, 0, 0]
    _, untied, _ = checkpoints("gated-untied-b8")
    assert untied.lm_head.weight is not untied.shared.weight and not untied.config.scale_decoder_outputs
    assert ours.num_parameters() == ct.parameter_count(ours.config)["total"]
    assert untied.num_parameters() == ct.parameter_count(untied.config)["total"]
    assert ct.parameter_count(ct.T5Config())["total"] == 60_506_624  # t5-small


def test_save_pretrained_round_trip_through_hf(checkpoints, tmp_path):
    hf, ours, _ = checkpoints("gated-untied-b8")
    ours.save_pretrained(tmp_path)
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, labels = batch("gated-untied-b8")
    with torch.no_grad():
        assert max_diff(again(input_ids=ids, attention_mask=mask, labels=labels).logits,
                        hf(input_ids=ids, attention_mask=mask, labels=labels).logits) <= ATOL
    assert ct.T5ForConditionalGeneration.from_pretrained(tmp_path).lm_head.weight is not None


def test_transformers4_style_untied_config_loads(checkpoints, tmp_path):
    """Old (transformers 4) v1.1 configs say tie_word_embeddings=False and nothing else."""
    _, ours, path = checkpoints("gated-untied-b8")
    config = json.loads((path / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    config["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    old = ct.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert not old.config.tie_word_embeddings and not old.config.scale_decoder_outputs
    ids, mask, labels = batch("gated-untied-b8")
    with torch.no_grad():
        assert max_diff(old(ids, attention_mask=mask, labels=labels).logits,
                        ours(ids, attention_mask=mask, labels=labels).logits) == 0


# ---- the KV cache and generation --------------------------------------------------------------


def test_cached_decoding_equals_full_forward(checkpoints):
    """Feeding the decoder one token at a time with the cache (self k/v growing, cross k/v
    computed once) gives the logits of the full forward pass at every position."""
    _, ours, _ = checkpoints("relu-tied-b32")
    ids, mask, labels = batch("relu-tied-b32", seed=3)
    dec = ct.shift_right(labels.masked_fill(labels == -100, 5), 0, 0)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits  # (B, T, V)
        enc = ours.get_encoder()(ids, attention_mask=mask)
        past, steps = None, []
        for t in range(dec.shape[1]):
            out = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, t:t + 1],
                       past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
        # A prompt of 4 decoder tokens, then single tokens.
        out = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, :4], use_cache=True)
        rest = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, 4:5],
                    past_key_values=out.past_key_values, use_cache=True)
    d = max_diff(torch.cat(steps, dim=1), full)
    MEASURED["cache"] = d
    print(f"cached step-by-step vs full forward: max|diff| = {d:.2e}")
    assert d <= ATOL and max_diff(rest.logits[:, 0], full[:, 4]) <= ATOL
    assert len(past) == 3 and all(len(layer) == 4 for layer in past)
    self_k, _, cross_k, _ = past[0]
    assert self_k.shape == (3, 3, dec.shape[1], 7) and cross_k.shape == (3, 3, ids.shape[1], 7)


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A tiny T5 with a large untied head, so greedy and sampled outputs vary with the input.
    (With a tied head random weights keep predicting the start token: the decoder's residual
    stream still holds its input embedding, whose dot product with itself wins.)"""
    config = transformers.T5Config(vocab_size=41, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_heads=2,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                   tie_word_embeddings=False, attn_implementation="eager")

    def large_head(model):
        model.lm_head.weight = torch.nn.Parameter(2 * torch.randn_like(model.lm_head.weight))

    hf = random_hf_model(transformers.T5ForConditionalGeneration, config, "t5-generation",
                         norms=("layer_norm",), biases=False, scale=0.3, extra=large_head)
    path = tmp_path_factory.mktemp("t5-generation")
    hf.save_pretrained(path)
    return hf, ct.T5ForConditionalGeneration.from_pretrained(path).eval()


def test_greedy_generate_equals_hf_with_early_eos(peaked):
    hf, ours = peaked
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(2, 41, (4, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    free = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=None)
    # An EOS that the first row produces early and some other row never produces.
    eos = next(int(t) for t in free[0, 2:6] if any(int(t) not in row[1:].tolist() for row in free[1:]))
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=eos)
    got = ours.generate(ids, 12, attention_mask=mask, eos_token_id=eos)
    assert torch.equal(got, want), f"\n{got}\n{want}"
    ended = (want == eos).any(dim=1)
    assert ended.any() and not ended.all()  # some rows end early (then padding), some run to the end
    row = int(ended.nonzero()[0])
    after = want[row, int((want[row] == eos).nonzero()[0]) + 1:]
    assert (after == 0).all()
    # Without the cache the same tokens come out.
    assert torch.equal(ours.generate(ids, 12, attention_mask=mask, eos_token_id=eos, use_cache=False), want)


def test_sampling_equals_hf(peaked):
    hf, ours = peaked
    ids = torch.randint(2, 41, (3, 8), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    for kwargs in (dict(temperature=0.7), dict(top_k=5, top_p=0.8)):
        torch.manual_seed(11)
        got = ours.generate(ids, 9, attention_mask=mask, do_sample=True, **kwargs)
        torch.manual_seed(11)
        want = hf.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=True, **{"top_k": 0, **kwargs})
        assert torch.equal(got, want), kwargs


# ---- bad input --------------------------------------------------------------------------------


def test_bad_input_names_the_argument(checkpoints):
    _, ours, _ = checkpoints("relu-tied-b32")
    ids, mask, labels = batch("relu-tied-b32")
    with pytest.raises(ValueError, match="decoder_input_ids must start with decoder_start_token_id = 0"):
        ours(ids, attention_mask=mask, decoder_input_ids=labels.clamp(min=2))  # forgot to shift right
    with pytest.raises(ValueError, match="decoder_input_ids or labels must be given"):
        ours(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="labels hold pad_token_id = 0 at 5 position"):
        ours(ids, attention_mask=mask, labels=labels.masked_fill(labels == -100, 0))  # padded with 0, not -100
    with pytest.raises(ValueError, match=r"labels \(token ids, or -100"):
        ours(ids, attention_mask=mask, labels=labels.masked_fill(labels == -100, -1))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        ours(ids + 100, attention_mask=mask, labels=labels)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(3, 23\)"):
        ours(ids, attention_mask=mask[:, :5], labels=labels)
    with pytest.raises(ValueError, match="relative_attention_num_buckets must be an int >= 4"):
        ct.T5Config(relative_attention_num_buckets=3)
    with pytest.raises(ValueError, match="relative_attention_max_distance must be an int > "):
        ct.T5Config(relative_attention_num_buckets=32, relative_attention_max_distance=16)
    with pytest.raises(ValueError, match="feed_forward_proj must be"):
        ct.T5Config(feed_forward_proj="gated-swishy")
    with pytest.raises(ValueError, match="shift labels right"):
        ct.shift_right(labels, None, 0)
