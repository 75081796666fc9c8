"""course_lib.models.bart against Hugging Face transformers, offline.

Each checkpoint is a randomly initialised HF ``BartForConditionalGeneration`` (biases,
LayerNorms and final_logits_bias randomised too; different head counts in the encoder and
decoder, odd widths) saved with ``save_pretrained`` and loaded with course_lib: logits, the
loss, hidden states and every gradient must agree (float32: max abs difference <= 1e-5) with
a padded encoder input. The KV cache reproduces the full forward pass and ``generate``
equals HF's token for token.
"""

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import bart as cb  # noqa: E402
from course_lib.models.seq2seq import shift_right  # noqa: E402
from tests.hf_checkpoints import checkpoint_cache, max_diff, random_hf_model  # noqa: E402

ATOL = 1e-5
CONFIGS = {
    "d24-h3/4": dict(vocab_size=77, max_position_embeddings=40, d_model=24, encoder_layers=2, decoder_layers=3,
                     encoder_attention_heads=3, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=29),
    "d16-scaled-tanh": dict(vocab_size=50, max_position_embeddings=32, d_model=16, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                            decoder_ffn_dim=24, scale_embedding=True, activation_function="gelu_new"),
}


pytestmark = pytest.mark.usefixtures("one_thread_torch_backend")  # conftest.py


def hf_model(name):
    def logits_bias(model):  # a buffer, not a parameter: HF keeps it at 0
        model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias))

    config = transformers.BartConfig(**CONFIGS[name], forced_eos_token_id=None, attn_implementation="eager")
    return random_hf_model(transformers.BartForConditionalGeneration, config, f"bart/{name}",
                           norms=("layer_norm", "layernorm"), extra=logits_bias)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """config -> (HF model, ours loaded from its directory, the directory), built once per module."""
    get = checkpoint_cache(tmp_path_factory, hf_model)

    @functools.cache
    def load(name):
        hf, path = get(name)
        return hf, cb.BartForConditionalGeneration.from_pretrained(path).eval(), path

    return load


def batch(name, B=3, S=19, T=11, seed=0):
    """Encoder ids (B, S) right-padded (with BART's pad id 1) to lengths S, 9, 2; labels
    (B, T) starting with <s> = 0, -100 after 6 in row 1."""
    g = torch.Generator().manual_seed(seed)
    V = CONFIGS[name]["vocab_size"]
    ids = torch.randint(3, V, (B, S), generator=g)
    mask = (torch.arange(S)[None, :] < torch.tensor([S, 9, 2][:B])[:, None]).long()
    labels = torch.randint(3, V, (B, T), generator=g)
    labels[:, 0] = 0
    labels[1, 6:] = -100
    return ids.masked_fill(mask == 0, 1), mask, labels


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_loss_match_hf(name, checkpoints):
    hf, ours, _ = checkpoints(name)
    ids, mask, labels = batch(name)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, labels=labels)
        want = hf(input_ids=ids, attention_mask=mask, labels=labels)
        got_h = ours.model(ids, attention_mask=mask).last_hidden_state  # decoder input = shift_right(input_ids)
        want_h = hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
    d = max_diff(got.logits, want.logits)
    print(f"{name:16s} logits max|diff| = {d:.2e}, loss |diff| = {abs(got.loss.item() - want.loss.item()):.2e}, "
          f"hidden max|diff| = {max_diff(got_h, want_h):.2e}")
    assert got.logits.shape == want.logits.shape and d <= ATOL
    assert abs(got.loss.item() - want.loss.item()) <= ATOL and max_diff(got_h, want_h) <= ATOL
    assert max_diff(got.encoder_last_hidden_state, want.encoder_last_hidden_state) <= ATOL


def test_gradients_match_hf(checkpoints):
    hf, ours, _ = checkpoints("d24-h3/4")
    hf.zero_grad()
    ours.zero_grad()
    ids, mask, labels = batch("d24-h3/4", seed=2)
    ours(ids, attention_mask=mask, labels=labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert sorted(ours_grads) == sorted(hf_grads)
    scale = max(g.abs().max().item() for g in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    print(f"gradients max|diff| / max|grad| = {worst:.2e}")
    for n in hf_grads:
        torch.testing.assert_close(ours_grads[n], hf_grads[n], rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{n}: {m}")


@pytest.mark.interpreter
def test_matches_hf_with_triton_kernels(checkpoints):
    hf, ours, _ = checkpoints("d16-scaled-tanh")
    ids, mask, labels = batch("d16-scaled-tanh", B=2, S=9, T=5)
    with backend.force_backend("triton"):
        got = ours(ids, attention_mask=mask, labels=labels)
        got.loss.backward()
    ours.zero_grad()
    want = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert max_diff(got.logits, want.logits) <= ATOL and abs(got.loss.item() - want.loss.item()) <= ATOL


def test_layout_offset_and_tied_head(checkpoints):
    hf, ours, _ = checkpoints("d24-h3/4")
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert sorted(ours.state_dict()) == sorted(hf.state_dict())
    assert ours.model.encoder.embed_positions.weight.shape == (40 + 2, 24)  # the offset of 2
    assert ours.lm_head.weight is ours.model.shared.weight is ours.model.decoder.embed_tokens.weight
    body = cb.BartModel.from_pretrained(checkpoints("d24-h3/4")[2])  # the prefix "model." is stripped
    assert torch.equal(body.shared.weight, ours.model.shared.weight)


def test_cached_decoding_equals_full_forward(checkpoints):
    _, ours, _ = checkpoints("d24-h3/4")
    ids, mask, labels = batch("d24-h3/4", seed=3)
    dec = shift_right(labels.masked_fill(labels == -100, 5), 2, 1)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits
        enc = ours.get_encoder()(ids, attention_mask=mask)
        past, steps = None, []
        for t in range(dec.shape[1]):
            out = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, t:t + 1],
                       past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    d = max_diff(torch.cat(steps, dim=1), full)
    print(f"cached step-by-step vs full forward: max|diff| = {d:.2e}")
    assert d <= ATOL and len(past) == 3 and all(len(layer) == 4 for layer in past)


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A tiny BART with large weights, so greedy and sampled outputs vary with the input."""
    config = transformers.BartConfig(vocab_size=45, max_position_embeddings=32, d_model=16, encoder_layers=2,
                                     decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                                     encoder_ffn_dim=32, decoder_ffn_dim=32, init_std=0.5, forced_eos_token_id=None,
                                     attn_implementation="eager")
    hf = random_hf_model(transformers.BartForConditionalGeneration, config, "bart-generation", biases=False)
    path = tmp_path_factory.mktemp("bart-generation")
    hf.save_pretrained(path)
    return hf, cb.BartForConditionalGeneration.from_pretrained(path).eval()


def test_greedy_generate_equals_hf_with_early_eos(peaked):
    hf, ours = peaked
    ids = torch.randint(3, 45, (4, 10), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    ids = ids.masked_fill(mask == 0, 1)
    free = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=None)
    eos = next(int(t) for t in free[0, 2:6] if any(int(t) not in row[1:].tolist() for row in free[1:]))
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=eos)
    got = ours.generate(ids, 12, attention_mask=mask, eos_token_id=eos)
    assert torch.equal(got, want), f"\n{got}\n{want}"
    ended = (want == eos).any(dim=1)
    assert ended.any() and not ended.all()
    row = int(ended.nonzero()[0])
    assert (want[row, int((want[row] == eos).nonzero()[0]) + 1:] == 1).all()  # then BART's padding


def test_sampling_equals_hf(peaked):
    hf, ours = peaked
    ids = torch.randint(3, 45, (3, 8), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    torch.manual_seed(7)
    got = ours.generate(ids, 9, attention_mask=mask, do_sample=True, top_k=6, temperature=0.8)
    torch.manual_seed(7)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=True, top_k=6, temperature=0.8)
    assert torch.equal(got, want)


def test_bad_input_names_the_argument(checkpoints):
    _, ours, _ = checkpoints("d24-h3/4")
    ids, mask, labels = batch("d24-h3/4")
    with pytest.raises(ValueError, match="input_ids: 41 tokens exceed max_position_embeddings = 40"):
        ours(torch.full((1, 41), 5), labels=labels[:1])
    with pytest.raises(ValueError, match="decoder_input_ids: 0 cached \\+ 41 new positions exceed"):
        ours(ids, attention_mask=mask, decoder_input_ids=torch.full((3, 41), 2))
    with pytest.raises(ValueError, match="labels hold pad_token_id = 1"):
        ours(ids, attention_mask=mask, labels=labels.masked_fill(labels == -100, 1))
    with pytest.raises(ValueError, match="decoder_input_ids must start with decoder_start_token_id = 2"):
        ours(ids, attention_mask=mask, decoder_input_ids=labels.clamp(min=0))
    with pytest.raises(ValueError, match="d_model \\(24\\) must be a multiple of decoder_attention_heads \\(5\\)"):
        cb.BartConfig(d_model=24, encoder_attention_heads=3, decoder_attention_heads=5)
