"""course_lib.models.albert against Hugging Face transformers, offline.

Random HF ALBERTs (E != H, hidden sizes that are not powers of two, several groups and inner
layers) are saved with ``save_pretrained`` and loaded with course_lib: outputs, gradients
(summed over the shared layers' steps) and parameter counts agree with HF's."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import albert as ca  # noqa: E402
from tests.hf_checkpoints import (  # noqa: E402
    assert_outputs_match, checkpoint_cache, max_diff, random_hf_model)

ATOL = 1e-5

CONFIGS = {
    # The released layout: one group of one layer, shared by all L = 3 steps.
    "E12-H36-L3-G1": dict(vocab_size=83, embedding_size=12, hidden_size=36, num_hidden_layers=3,
                          num_hidden_groups=1, inner_group_num=1, num_attention_heads=3,
                          intermediate_size=40, max_position_embeddings=24, hidden_act="gelu_new"),
    # Several groups, two inner layers each, L not a multiple of G, exact GELU.
    "E20-H24-L5-G2-I2": dict(vocab_size=71, embedding_size=20, hidden_size=24, num_hidden_layers=5,
                             num_hidden_groups=2, inner_group_num=2, num_attention_heads=2,
                             intermediate_size=30, max_position_embeddings=24, hidden_act="gelu",
                             type_vocab_size=3),
}
HEADS = ["AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM"]
T = 11


def hf_model(name, config_name):
    return random_hf_model(getattr(transformers, name), transformers.AlbertConfig(**CONFIGS[config_name]),
                           f"{name}/{config_name}", norms=("LayerNorm", "layer_norm"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(head, config) -> (HF model, directory it was saved in), built once per module."""
    return checkpoint_cache(tmp_path_factory, hf_model)


def batch(config_name, padded, B=3, seed=0):
    cfg = CONFIGS[config_name]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = torch.randint(0, cfg.get("type_vocab_size", 2), (B, T - T // 2), generator=g)
    mask = None
    if padded:
        mask = (torch.arange(T)[None, :] < torch.tensor([T, 6, 1][:B])[:, None]).long()
        ids = ids.masked_fill(mask == 0, 0)
    return ids, types, mask


def tensors(name, out):
    if name == "AlbertModel":
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    if name == "AlbertForPreTraining":
        return {"prediction_logits": out.prediction_logits, "sop_logits": out.sop_logits}
    return {"logits": out.logits}


def compare_forward(name, config_name, padded, checkpoints):
    hf, path = checkpoints(name, config_name)
    ours = getattr(ca, name).from_pretrained(path, strict=True).eval()
    ids, types, mask = batch(config_name, padded)
    with torch.no_grad():
        got = tensors(name, ours(ids, attention_mask=mask, token_type_ids=types))
        want = tensors(name, hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
    assert_outputs_match(got, want, f"{name:22s} {config_name:18s} padded={padded!s:5s}", ATOL)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", HEADS)
def test_forward_matches_hf(name, config_name, padded, checkpoints):
    with backend.force_backend("torch"):
        compare_forward(name, config_name, padded, checkpoints)


@pytest.mark.interpreter
def test_forward_matches_hf_with_triton_kernels(checkpoints):
    with backend.force_backend("triton"):
        compare_forward("AlbertForPreTraining", "E20-H24-L5-G2-I2", True, checkpoints)


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_pretraining_loss_and_shared_gradients_match_hf(config_name, checkpoints):
    hf, path = checkpoints("AlbertForPreTraining", config_name)
    ours = ca.AlbertForPreTraining.from_pretrained(path).eval()
    ids, types, mask = batch(config_name, padded=True)
    g = torch.Generator().manual_seed(2)
    labels = torch.where((torch.rand(ids.shape, generator=g) < 0.4) & (mask == 1), ids, -100)
    order = torch.randint(0, 2, (ids.shape[0],), generator=g)
    hf.zero_grad()
    with backend.force_backend("torch"):
        out = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels, sentence_order_label=order)
        out.loss.backward()
    hf_out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, sentence_order_label=order)
    hf_out.loss.backward()
    assert abs(out.loss.item() - hf_out.loss.item()) <= ATOL
    assert out.sop_loss is not None and out.mlm_loss is not None
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert sorted(ours_grads) == sorted(hf_grads)
    scale = max(t.abs().max().item() for t in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    print(f"{config_name}: max|grad diff| / max|grad| = {worst:.2e}")
    assert worst <= 1e-5, f"gradients differ by {worst:.2e} of the largest"


def test_state_dict_keys_and_parameter_count_equal_hf(checkpoints):
    for config_name in CONFIGS:
        for name in HEADS:
            hf, path = checkpoints(name, config_name)
            ours = getattr(ca, name).from_pretrained(path)
            hf_keys = {k for k in hf.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}
            assert set(ours.state_dict()) == hf_keys, name
            assert ours.num_parameters() == hf.num_parameters(), (name, config_name)
        body = ca.AlbertModel(ca.AlbertConfig(**CONFIGS[config_name]))
        assert ca.parameter_count(body.config)["total"] == body.num_parameters()


def test_sharing_runs_the_same_parameters_every_step():
    """With one group the model holds one layer whatever L is; the steps still differ."""
    small = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_attention_heads=2, intermediate_size=20)
    n = {L: ca.AlbertModel(ca.AlbertConfig(num_hidden_layers=L, **small)).num_parameters() for L in (1, 6)}
    assert n[1] == n[6]
    two = ca.AlbertModel(ca.AlbertConfig(num_hidden_layers=6, num_hidden_groups=2, **small)).num_parameters()
    assert two > n[6]
    cfg = ca.AlbertConfig(num_hidden_layers=18, num_hidden_groups=14, **small)
    assert [cfg.group_of_step(i) for i in range(18)] == [int(i / (18 / 14)) for i in range(18)]
    torch.manual_seed(0)
    m1 = ca.AlbertModel(ca.AlbertConfig(num_hidden_layers=1, **small)).eval()
    m3 = ca.AlbertModel(ca.AlbertConfig(num_hidden_layers=3, **small)).eval()
    m3.load_state_dict(m1.state_dict())
    ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad():
        assert max_diff(m1(ids).last_hidden_state, m3(ids).last_hidden_state) > 1e-3


def test_bad_inputs_are_named(checkpoints):
    with pytest.raises(ValueError, match="num_hidden_groups"):
        ca.AlbertConfig(num_hidden_layers=2, num_hidden_groups=3)
    model = ca.AlbertModel(ca.AlbertConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=20, max_position_embeddings=8))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings = 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids must have"):
        model(torch.zeros(1, 4, dtype=torch.long), token_type_ids=torch.zeros(1, 5, dtype=torch.long))
    _, path = checkpoints("AlbertModel", "E12-H36-L3-G1")
    from course_lib.models import roberta

    with pytest.raises(ValueError, match="model_type 'albert'"):
        roberta.RobertaModel.from_pretrained(path)
