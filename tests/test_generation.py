"""course_lib.generation against Hugging Face's ``generate``, token for token, offline.

Greedy and sampled decoding of course_lib's GPT-2 must produce exactly HF's tokens for the
same checkpoint (sampling: after the same ``torch.manual_seed``), for batches of left-padded
prompts with an attention mask, with the KV cache and without, with an end-of-sequence token
that finishes some rows early (they are then padded as HF pads them). The processors are
checked one by one against HF's classes, ties and ``min_tokens_to_keep`` included. The
protocol serves HF's own models too (decoder-only and, for Chapter 7, a tiny T5).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.generation import logits_process as hf_lp  # noqa: E402

from course_lib import generation as gen  # noqa: E402
from course_lib.models.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402
from tests.hf_checkpoints import random_hf_model  # noqa: E402

V = 89


pytestmark = pytest.mark.usefixtures("one_thread_torch_backend")  # conftest.py


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(HF GPT2LMHeadModel, ours) with the same random weights; the token table is scaled
    up so that the next-token distributions are peaked enough for top-k/top-p to matter."""
    config = transformers.GPT2Config(vocab_size=V, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    hf = random_hf_model(transformers.GPT2LMHeadModel, config, "generation", norms=(".ln_",),
                         extra=lambda model: model.transformer.wte.weight.mul_(8))
    path = tmp_path_factory.mktemp("gpt2-generation")
    hf.save_pretrained(path)
    return hf, GPT2LMHeadModel.from_pretrained(path).eval()


def prompts(B=3, T=9, seed=0, padded=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    if not padded:
        return ids, None
    lengths = torch.tensor([T, 5, 2][:B])
    mask = (torch.arange(T)[None, :] >= (T - lengths)[:, None]).long()  # left padding
    return ids.masked_fill(mask == 0, 0), mask


def eos_from_a_run(model, ids, mask):
    """A token that the greedy run (without EOS) emits mid-way in row 0: as EOS it ends
    that row early while the others go on."""
    out = gen.generate(model, ids, 8, attention_mask=mask, eos_token_id=[])
    return int(out[0, ids.shape[1] + 3])


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape, f"{tuple(ours.shape)} != {tuple(theirs.shape)}"
    assert torch.equal(ours, theirs), f"first difference at {(ours != theirs).nonzero()[0].tolist()}\n{ours}\n{theirs}"


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("with_eos", [False, True])
def test_greedy_equals_hf(models, use_cache, with_eos):
    hf, ours = models
    ids, mask = prompts()
    eos = eos_from_a_run(ours, ids, mask) if with_eos else None
    got = ours.generate(ids, 15, attention_mask=mask, use_cache=use_cache, eos_token_id=eos if with_eos else [])
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, use_cache=use_cache,
                       eos_token_id=eos)
    assert_same(got, want)
    if with_eos:  # row 0 ended early and was padded (with pad_token_id = 0) from there on
        first = (got[0, ids.shape[1]:] == eos).nonzero()[0].item()
        assert (got[0, ids.shape[1] + first + 1:] == 0).all()


SAMPLING = [
    dict(),
    dict(temperature=0.7),
    dict(top_k=5),
    dict(top_p=0.6),
    dict(temperature=1.3, top_k=7, top_p=0.9),
    dict(temperature=0.8, top_p=0.75, repetition_penalty=1.4),
    dict(top_k=1),  # top-k of 1 is greedy, drawn through multinomial
    dict(repetition_penalty=0.7, top_k=20),
]


@pytest.mark.parametrize("kwargs", SAMPLING, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "plain" for c in SAMPLING])
def test_sampling_equals_hf(models, kwargs):
    hf, ours = models
    ids, mask = prompts(seed=1)
    eos = eos_from_a_run(ours, ids, mask)
    for seed in (0, 1):
        torch.manual_seed(seed)
        got = ours.generate(ids, 12, attention_mask=mask, do_sample=True, eos_token_id=eos, **kwargs)
        torch.manual_seed(seed)
        # HF's GenerationConfig defaults to top_k=50: pass top_k=0 explicitly to turn it off.
        want = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=True, eos_token_id=eos,
                           **{"top_k": 0, **kwargs})
        assert_same(got, want)


def test_sampling_without_cache_and_single_prompt(models):
    hf, ours = models
    ids, _ = prompts(B=1, padded=False)
    for use_cache in (True, False):
        torch.manual_seed(5)
        got = ours.generate(ids, 10, do_sample=True, top_p=0.8, use_cache=use_cache, eos_token_id=[])
        torch.manual_seed(5)
        want = hf.generate(ids, max_new_tokens=10, do_sample=True, top_k=0, top_p=0.8, use_cache=use_cache,
                           eos_token_id=None)
        assert_same(got, want)


def test_greedy_repetition_penalty_ignores_left_padding(models):
    hf, ours = models
    ids, mask = prompts(seed=2)
    got = ours.generate(ids, 10, attention_mask=mask, repetition_penalty=1.8, eos_token_id=[])
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=10, repetition_penalty=1.8, eos_token_id=None)
    assert_same(got, want)


def test_mask_inferred_from_padding_as_hf(models):
    """Without an attention_mask, HF infers it from pad_token_id when pad != eos: so do we."""
    hf, ours = models
    ids, mask = prompts(seed=3)
    got = ours.generate(ids, 8)
    want = hf.generate(ids, max_new_tokens=8)  # pad 0 != eos 2: mask inferred
    assert_same(got, want)
    assert_same(got, ours.generate(ids, 8, attention_mask=mask))


def test_protocol_drives_hf_models_too(models):
    hf, _ = models
    ids, mask = prompts(seed=4)
    torch.manual_seed(3)
    got = gen.generate(hf, ids, 10, attention_mask=mask, do_sample=True, top_k=9)
    torch.manual_seed(3)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=9)
    assert_same(got, want)


def test_encoder_decoder_protocol_with_hf_t5(tmp_path):
    """Chapter 7's path: encoder once, decoder from decoder_start_token_id, cross-attention mask."""
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    t5 = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        t5.shared.weight.mul_(30)
    ids, _ = prompts(seed=5, padded=False)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # an encoder-decoder pads on the right
    got = gen.generate(t5, ids, 8, attention_mask=mask)
    want = t5.generate(ids, attention_mask=mask, max_new_tokens=8)
    assert_same(got, want)
    for kwargs in (dict(top_p=0.7), dict(temperature=0.5, top_k=4, repetition_penalty=1.3)):
        torch.manual_seed(1)
        got = gen.generate(t5, ids, 8, attention_mask=mask, do_sample=True, **kwargs)
        torch.manual_seed(1)
        want = t5.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True, **{"top_k": 0, **kwargs})
        assert_same(got, want)


# ---- the processors against HF's classes --------------------------------------------------


def scores_with_ties(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, 23, generator=g)
    s[0, :6] = 2.0  # six tokens tied for the best score
    s[1, 3] = s[1, 7] = s[1].max() + 1  # a tie at the top
    s[2, :] = 0.0  # uniform
    s[3, :] = float("-inf")
    s[3, 5:9] = 0.0  # four tokens of probability 1/4 each: cumulative sums hit 1 - p exactly
    return s


@pytest.mark.parametrize("k", [1, 3, 5, 23, 40])
@pytest.mark.parametrize("keep", [1, 4])
def test_top_k_equals_hf(k, keep):
    s = scores_with_ties()
    want = hf_lp.TopKLogitsWarper(top_k=k, min_tokens_to_keep=keep)(None, s.clone())
    assert torch.equal(gen.top_k_filter(s, k, keep), want)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("keep", [1, 3])
def test_top_p_equals_hf(p, keep):
    s = scores_with_ties(seed=1)
    want = hf_lp.TopPLogitsWarper(top_p=p, min_tokens_to_keep=keep)(None, s.clone())
    assert torch.equal(gen.top_p_filter(s, p, keep), want)


def test_repetition_penalty_equals_hf():
    s = scores_with_ties(seed=2)
    ids = torch.randint(0, 23, (4, 7), generator=torch.Generator().manual_seed(0))
    skip = torch.tensor([0, 2, 7, 3])
    for penalty in (0.5, 1.5):
        want = hf_lp.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=skip)(ids, s.clone())
        assert torch.equal(gen.apply_repetition_penalty(s, ids, penalty, skip), want)
        want = hf_lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, s.clone())
        assert torch.equal(gen.apply_repetition_penalty(s, ids, penalty), want)


# ---- bad input -------------------------------------------------------------------------------


def test_bad_arguments_name_themselves():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    ids = torch.randint(0, V, (2, 6))
    cases = [
        (dict(input_ids=torch.zeros(1, 17, dtype=torch.long)), "input_ids: the prompt has 17 tokens.*n_positions = 16"),
        (dict(max_new_tokens=11), "max_new_tokens = 11 after 6 token.*n_positions = 16.*at most 10"),
        (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
        (dict(do_sample=True, temperature=0.0), "temperature must be a number > 0"),
        (dict(temperature=-1.0), "temperature must be a number > 0"),
        (dict(do_sample=True, top_p=0.0), r"top_p must lie in \(0, 1\]"),
        (dict(do_sample=True, top_p=1.5), r"top_p must lie in \(0, 1\]"),
        (dict(do_sample=True, top_k=-1), "top_k must be an int >= 0"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
        (dict(attention_mask=torch.ones(2, 5)), r"attention_mask must have input_ids' shape \(2, 6\), got \(2, 5\)"),
        (dict(attention_mask=torch.full((2, 6), 2)), "attention_mask must hold only 0"),
        (dict(input_ids=torch.full((1, 3), V)), r"input_ids must lie in \[0, vocab_size = 89\)"),
        (dict(input_ids=torch.zeros(4)), r"input_ids must be an integer tensor of shape \(B, T\)"),
    ]
    for kwargs, message in cases:
        kwargs = {"input_ids": ids, "max_new_tokens": 4, **kwargs}
        with pytest.raises(ValueError, match=message):
            gen.generate(model, **kwargs)


def test_beam_search_scores_and_greedy_special_case(models):
    _, ours = models
    ids, _ = prompts(B=1, padded=False)
    beams, scores = gen.beam_search(ours, ids, 6, num_beams=3)
    assert beams.shape == (3, ids.shape[1] + 6) and (scores[:-1] >= scores[1:]).all()
    with torch.no_grad():  # each score is the sequence's summed log-probability of its new tokens
        logp = torch.log_softmax(ours(beams).logits.float(), -1)[:, ids.shape[1] - 1 : -1]
        total = logp.gather(-1, beams[:, ids.shape[1]:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(scores, total, rtol=1e-5, atol=1e-5)
    greedy, _ = gen.beam_search(ours, ids, 6, num_beams=1)
    assert_same(greedy, ours.generate(ids, 6, eos_token_id=[]))
    with pytest.raises(ValueError, match="num_beams must be a positive int"):
        gen.beam_search(ours, ids, 3, num_beams=0)
