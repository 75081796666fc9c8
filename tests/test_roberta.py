"""course_lib.models.roberta against Hugging Face transformers, offline.

Each test builds a random HF RoBERTa, ``save_pretrained``s it to a temporary directory and
loads it with course_lib: outputs and gradients agree to float32 rounding (max abs
difference <= 1e-5; run with -s to see the measured numbers)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import roberta as cr  # noqa: E402
from tests.hf_checkpoints import (  # noqa: E402
    assert_outputs_match, checkpoint_cache, max_diff, random_hf_model)

ATOL = 1e-5

# Hidden sizes that are not powers of two, pad_token_id 1 (RoBERTa's) and 0, 1 and 2 segment types.
CONFIGS = {
    "h36-nh3-L2-pad1": dict(vocab_size=91, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                            intermediate_size=50, max_position_embeddings=20, type_vocab_size=1,
                            layer_norm_eps=1e-5, pad_token_id=1),
    "h40-nh4-L1-pad0-tanh": dict(vocab_size=67, hidden_size=40, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=44, max_position_embeddings=30, type_vocab_size=2,
                                 hidden_act="gelu_new", pad_token_id=0),
}
HEADS = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification"]
T = 13


def hf_model(name, config_name):
    kwargs = dict(CONFIGS[config_name])
    if name == "RobertaForSequenceClassification":
        kwargs["num_labels"] = 3
    return random_hf_model(getattr(transformers, name), transformers.RobertaConfig(**kwargs),
                           f"{name}/{config_name}", norms=("LayerNorm", "layer_norm"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(head, config) -> (HF model, directory it was saved in), built once per module."""
    return checkpoint_cache(tmp_path_factory, hf_model)


def batch(config_name, padded, B=3, seed=0):
    """Ids that avoid pad_token_id except where padded: RoBERTa finds padding by its id."""
    cfg = CONFIGS[config_name]
    pad = cfg["pad_token_id"]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg["vocab_size"] - 1, (B, T), generator=g)
    ids = ids + (ids >= pad).long()  # skip the pad id
    mask = None
    if padded:  # lengths T, 7, 2 (right padding)
        mask = (torch.arange(T)[None, :] < torch.tensor([T, 7, 2][:B])[:, None]).long()
        ids = ids.masked_fill(mask == 0, pad)
    return ids, mask


def tensors(name, out):
    if name == "RobertaModel":
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    return {"logits": out.logits}


def compare_forward(name, config_name, padded, checkpoints):
    hf, path = checkpoints(name, config_name)
    ours = getattr(cr, name).from_pretrained(path, strict=True).eval()
    ids, mask = batch(config_name, padded)
    with torch.no_grad():
        got, want = tensors(name, ours(ids, attention_mask=mask)), tensors(name, hf(input_ids=ids, attention_mask=mask))
    assert_outputs_match(got, want, f"{name:34s} {config_name:22s} padded={padded!s:5s}", ATOL)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", HEADS)
def test_forward_matches_hf(name, config_name, padded, checkpoints):
    with backend.force_backend("torch"):
        compare_forward(name, config_name, padded, checkpoints)


@pytest.mark.interpreter
def test_forward_matches_hf_with_triton_kernels(checkpoints):
    with backend.force_backend("triton"):
        compare_forward("RobertaForMaskedLM", "h36-nh3-L2-pad1", True, checkpoints)


@pytest.mark.parametrize("name", ["RobertaForMaskedLM", "RobertaForSequenceClassification"])
def test_loss_and_gradients_match_hf(name, checkpoints):
    config_name = "h36-nh3-L2-pad1"
    hf, path = checkpoints(name, config_name)
    ours = cr.__dict__[name].from_pretrained(path).eval()
    ids, mask = batch(config_name, padded=True)
    g = torch.Generator().manual_seed(1)
    if name == "RobertaForMaskedLM":
        labels = torch.where((torch.rand(ids.shape, generator=g) < 0.4) & (mask == 1), ids, -100)
    else:
        labels = torch.randint(0, 3, (ids.shape[0],), generator=g)
    hf.zero_grad()
    with backend.force_backend("torch"):
        loss = ours(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
    hf_loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
    hf_loss.backward()
    assert abs(loss.item() - hf_loss.item()) <= ATOL
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert sorted(ours_grads) == sorted(hf_grads)
    scale = max(t.abs().max().item() for t in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    print(f"{name}: loss diff {abs(loss.item() - hf_loss.item()):.2e}, max|grad diff|/max|grad| = {worst:.2e}")
    assert worst <= 1e-5, f"gradients differ by {worst:.2e} of the largest"


def test_state_dict_keys_and_parameter_count_equal_hf(checkpoints):
    for name in HEADS:
        hf, path = checkpoints(name, "h36-nh3-L2-pad1")
        ours = getattr(cr, name).from_pretrained(path)
        hf_keys = {k for k in hf.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}
        assert set(ours.state_dict()) == hf_keys, name
        assert ours.num_parameters() == hf.num_parameters(), name
        assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}


def test_position_ids_follow_fairseq():
    ids = torch.tensor([[0, 31, 2, 1, 1], [1, 1, 0, 7, 2]])  # right and left padding, pad id 1
    got = cr.create_position_ids_from_input_ids(ids, padding_idx=1)
    assert got.tolist() == [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4]]
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    want = RobertaEmbeddings.create_position_ids_from_input_ids(ids, 1)
    assert torch.equal(got, want)


def test_left_padding_gives_the_same_states_as_right_padding():
    torch.manual_seed(0)
    model = cr.RobertaModel(cr.RobertaConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=30,
                                             max_position_embeddings=16)).eval()
    real = torch.tensor([0, 9, 8, 7, 2])
    right = torch.cat([real, torch.ones(3, dtype=torch.long)])[None]
    left = torch.cat([torch.ones(3, dtype=torch.long), real])[None]
    with torch.no_grad():
        a = model(right, attention_mask=(right != 1).long()).last_hidden_state[0, :5]
        b = model(left, attention_mask=(left != 1).long()).last_hidden_state[0, 3:]
    assert max_diff(a, b) <= ATOL


def test_usable_length_is_max_positions_minus_two():
    cfg = cr.RobertaConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=30, max_position_embeddings=16)
    assert cfg.max_length == 14
    model = cr.RobertaModel(cfg).eval()
    model(torch.full((1, 14), 5))  # fits
    with pytest.raises(ValueError, match="usable length.*14"):
        model(torch.full((1, 15), 5))


def test_bad_inputs_are_named(tmp_path, checkpoints):
    model = cr.RobertaModel(cr.RobertaConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=30,
                                             max_position_embeddings=16))
    with pytest.raises(ValueError, match="attention_mask must have"):
        model(torch.full((2, 5), 4), attention_mask=torch.ones(2, 4))
    with pytest.raises(IndexError, match="vocab_size = 50"):
        model(torch.full((1, 5), 50))
    _, path = checkpoints("RobertaModel", "h36-nh3-L2-pad1")
    from course_lib.models import bert

    with pytest.raises(ValueError, match="model_type 'roberta'"):
        bert.BertModel.from_pretrained(path)


def test_save_pretrained_loads_in_hf(tmp_path):
    torch.manual_seed(1)
    ours = cr.RobertaForMaskedLM(cr.RobertaConfig(vocab_size=40, hidden_size=24, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=30,
                                                  max_position_embeddings=12)).eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.RobertaForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    with torch.no_grad(), backend.force_backend("torch"):
        assert max_diff(ours(ids, attention_mask=(ids != 1).long()).logits,
                        hf(input_ids=ids, attention_mask=(ids != 1).long()).logits) <= ATOL


def test_masked_positions_only_gives_the_same_loss(checkpoints):
    _, path = checkpoints("RobertaForMaskedLM", "h36-nh3-L2-pad1")
    model = cr.RobertaForMaskedLM.from_pretrained(path).eval()
    ids, mask = batch("h36-nh3-L2-pad1", padded=True)
    labels = torch.where((torch.rand(ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3) & (mask == 1),
                         ids, -100)
    with torch.no_grad(), backend.force_backend("torch"):
        full = model(ids, attention_mask=mask, labels=labels)
        only = model(ids, attention_mask=mask, labels=labels, masked_positions_only=True)
    assert only.logits.shape == (int((labels != -100).sum()), CONFIGS["h36-nh3-L2-pad1"]["vocab_size"])
    assert abs(full.loss.item() - only.loss.item()) <= 1e-6
    assert max_diff(only.logits, full.logits[labels != -100]) <= 1e-6
