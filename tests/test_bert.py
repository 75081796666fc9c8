"""course_lib.models.bert against Hugging Face transformers, offline.

Every test builds a randomly initialised HF model, ``save_pretrained``s it into a
temporary directory and loads that directory with course_lib: hidden states, pooled
output, logits and every parameter gradient must agree (float32: max abs difference
<= 1e-5; the measured differences are printed, run with -s to see them). Most tests run
the PyTorch reference of each kernel (the plain-CPU path); the `interpreter` tests run
the same comparisons through the Triton kernels under TRITON_INTERPRET=1.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_lib.kernels import backend  # noqa: E402
from course_lib.models import bert as cb  # noqa: E402
from tests.hf_checkpoints import (  # noqa: E402
    assert_outputs_match, checkpoint_cache, max_diff, random_hf_model)

ATOL = 1e-5  # float32, on outputs of magnitude ~1

# name: HF config kwargs. Odd vocabularies, both GELU forms, 1 and 2 layers, 2 and 4 heads.
CONFIGS = {
    "h32-nh2-L1-erf": dict(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37, hidden_act="gelu", max_position_embeddings=40),
    "h48-nh4-L2-tanh": dict(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, hidden_act="gelu_new", max_position_embeddings=64),
    "h32-nh4-L2-ptanh": dict(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=48, hidden_act="gelu_pytorch_tanh", type_vocab_size=3,
                             layer_norm_eps=1e-7, pad_token_id=1),
}
HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
         "BertForTokenClassification", "BertForQuestionAnswering"]
NUM_LABELS = {"BertForSequenceClassification": 3, "BertForTokenClassification": 5}
MEASURED: dict[str, float] = {}


def hf_model(name, config_name):
    kwargs = dict(CONFIGS[config_name])
    if name in NUM_LABELS:
        kwargs["num_labels"] = NUM_LABELS[name]
    return random_hf_model(getattr(transformers, name), transformers.BertConfig(**kwargs),
                           f"{name}/{config_name}", norms=("LayerNorm",))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(head, config) -> (HF model, directory it was saved in), built once per module."""
    return checkpoint_cache(tmp_path_factory, hf_model)


def batch(config_name, padded, B=3, T=13, seed=0):
    cfg = CONFIGS[config_name]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2 :] = torch.randint(0, cfg.get("type_vocab_size", 2), (B, T - T // 2), generator=g)
    mask = None
    if padded:  # real lengths T, 7, 1: one sequence is all padding but its [CLS]
        mask = (torch.arange(T)[None, :] < torch.tensor([T, 7, 1][:B])[:, None]).long()
        ids = ids.masked_fill(mask == 0, cfg.get("pad_token_id", 0))
    return ids, types, mask


def outputs(name, out):
    """The tensors to compare, by name, for our output object or HF's."""
    if name == "BertModel":
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    if name == "BertForPreTraining":
        return {"prediction_logits": out.prediction_logits, "seq_relationship_logits": out.seq_relationship_logits}
    if name == "BertForQuestionAnswering":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"logits": out.logits}


def compare_forward(name, config_name, padded, checkpoints, record=True):
    hf, path = checkpoints(name, config_name)
    ours = getattr(cb, name).from_pretrained(path).eval()
    ids, types, mask = batch(config_name, padded)
    with torch.no_grad():
        got = outputs(name, ours(ids, attention_mask=mask, token_type_ids=types))
        want = outputs(name, hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
    diffs = assert_outputs_match(got, want, f"{name:32s} {config_name:18s} padded={padded!s:5s}", ATOL)
    if record:
        for key, d in diffs.items():
            MEASURED[f"{name}/{config_name}/{'padded' if padded else 'full'}/{key}"] = d


# ---- forward parity ---------------------------------------------------------------------


def test_no_bias_or_layernorm_is_left_at_its_initial_value(checkpoints):
    """HF starts biases at 0 and LayerNorm at (1, 0): a model that dropped one would still match."""
    hf, _ = checkpoints("BertForPreTraining", "h32-nh2-L1-erf")
    moved = {n: p for n, p in hf.named_parameters() if n.endswith("bias") or "LayerNorm" in n}
    assert len(moved) > 10
    for n, p in moved.items():
        start = 1.0 if n.endswith("LayerNorm.weight") else 0.0
        assert (p != start).all(), n



@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", HEADS)
def test_forward_matches_hf(name, config_name, padded, checkpoints):
    with backend.force_backend("torch"):
        compare_forward(name, config_name, padded, checkpoints)


@pytest.mark.parametrize("name", ["BertModel", "BertForPreTraining"])
@pytest.mark.interpreter
def test_forward_matches_hf_with_triton_kernels(name, checkpoints):
    with backend.force_backend("triton"):
        compare_forward(name, "h48-nh4-L2-tanh", True, checkpoints, record=False)


def test_state_dict_keys_equal_hf(checkpoints):
    for name in HEADS:
        hf, path = checkpoints(name, "h32-nh2-L1-erf")
        ours = getattr(cb, name).from_pretrained(path)
        assert sorted(ours.state_dict()) == sorted(hf.state_dict()), name
        assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}


# ---- gradients ----------------------------------------------------------------------------


def loss_inputs(name, config_name, ids, mask):
    g = torch.Generator().manual_seed(3)
    B, T = ids.shape
    labels = torch.where(torch.rand(B, T, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    if name == "BertForPreTraining":
        return dict(labels=labels, next_sentence_label=torch.randint(0, 2, (B,), generator=g))
    if name == "BertForMaskedLM":
        return dict(labels=labels)
    if name == "BertForSequenceClassification":
        return dict(labels=torch.randint(0, NUM_LABELS[name], (B,), generator=g))
    if name == "BertForTokenClassification":
        return dict(labels=torch.randint(0, NUM_LABELS[name], (B, T), generator=g).masked_fill(mask == 0, -100))
    if name == "BertForQuestionAnswering":
        start, end = torch.randint(0, T, (2, B), generator=g)
        return dict(start_positions=start, end_positions=end)
    raise ValueError(name)


def compare_gradients(name, config_name, checkpoints, output_attentions=False):
    hf, path = checkpoints(name, config_name)
    ours = getattr(cb, name).from_pretrained(path).eval()
    hf.zero_grad()
    ids, types, mask = batch(config_name, padded=True)
    if name == "BertModel":  # a scalar from both outputs
        weights = torch.randn(ids.shape[0], ids.shape[1], CONFIGS[config_name]["hidden_size"])

        def loss_of(model, out):
            return (out.last_hidden_state * weights).sum() + out.pooler_output.pow(2).sum()

        extra = {}
    else:
        extra = loss_inputs(name, config_name, ids, mask)

        def loss_of(model, out):
            return out.loss

    out = ours(ids, attention_mask=mask, token_type_ids=types, output_attentions=output_attentions, **extra)
    loss_of(ours, out).backward()
    hf_out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, **extra)
    loss_of(hf, hf_out).backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert sorted(ours_grads) == sorted(hf_grads)
    # Relative to the largest gradient: some gradients are exactly zero in exact arithmetic
    # (the key bias: softmax ignores a constant added to all scores), and both models then
    # hold only rounding noise there.
    scale = max(g.abs().max().item() for g in hf_grads.values())
    worst = max(max_diff(ours_grads[n], hf_grads[n]) for n in hf_grads) / scale
    MEASURED[f"{name}/{config_name}/grad (max|diff|/max|grad|)"] = worst
    print(f"{name:32s} {config_name:18s} gradients: max|diff| / max|grad| = {worst:.2e}")
    for n in hf_grads:
        torch.testing.assert_close(ours_grads[n], hf_grads[n], rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", ["BertModel", "BertForPreTraining"])
def test_gradients_match_hf(name, config_name, checkpoints):
    with backend.force_backend("torch"):
        compare_gradients(name, config_name, checkpoints)


@pytest.mark.parametrize("name", HEADS[2:])
def test_fine_tuning_head_gradients_match_hf(name, checkpoints):
    with backend.force_backend("torch"):
        compare_gradients(name, "h48-nh4-L2-tanh", checkpoints)


@pytest.mark.interpreter
def test_gradients_match_hf_with_triton_kernels(checkpoints):
    with backend.force_backend("triton"):
        compare_gradients("BertForPreTraining", "h32-nh4-L2-ptanh", checkpoints)


def test_materialised_attention_path_matches_hf(checkpoints):
    """output_attentions=True takes the path that builds the (T, T) probabilities (the
    softmax kernel; training with attention dropout takes it too): same outputs and
    gradients, and the same attention maps as HF's eager attention."""
    _, path = checkpoints("BertForPreTraining", "h48-nh4-L2-tanh")
    hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    with pytest.warns(UserWarning, match="unexpected key"):  # the pretraining heads
        ours = cb.BertModel.from_pretrained(path).eval()
    ids, types, mask = batch("h48-nh4-L2-tanh", padded=True)
    with backend.force_backend("torch"), torch.no_grad():
        got = ours(ids, mask, types, output_attentions=True)
    want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
    assert max_diff(got.last_hidden_state, want.last_hidden_state) <= ATOL
    assert len(got.attentions) == len(want.attentions) == 2
    for a, b in zip(got.attentions, want.attentions):
        assert a.shape == b.shape and max_diff(a, b) <= 1e-6
    with backend.force_backend("torch"):
        compare_gradients("BertForPreTraining", "h48-nh4-L2-tanh", checkpoints, output_attentions=True)


def test_training_mode_uses_dropout_and_runs_backward():
    torch.manual_seed(0)
    model = cb.BertForPreTraining(cb.BertConfig(**CONFIGS["h32-nh2-L1-erf"])).train()
    ids, types, mask = batch("h32-nh2-L1-erf", padded=True)
    with backend.force_backend("torch"):
        out = model(ids, mask, types)
        a, b = out.prediction_logits, model(ids, mask, types).prediction_logits
        (a.sum() + out.seq_relationship_logits.sum()).backward()
    assert not torch.equal(a, b)  # dropout is active
    assert all(p.grad is not None for p in model.parameters())


# ---- parameter counts -----------------------------------------------------------------

BASE = dict()
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


@pytest.mark.parametrize("kwargs, expected", [(BASE, 109_482_240), (LARGE, 335_141_888)])
def test_parameter_counts(kwargs, expected):
    with torch.device("meta"):  # no memory is allocated
        ours = cb.BertModel(cb.BertConfig(**kwargs))
        hf = transformers.BertModel(transformers.BertConfig(**kwargs))
    assert next(ours.parameters()).is_meta
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters()) == expected
    assert cb.parameter_count(cb.BertConfig(**kwargs))["total"] == expected
    with torch.device("meta"):  # the MLM decoder is tied: only its bias and the heads add parameters
        pre = cb.BertForPreTraining(cb.BertConfig(**kwargs))
    H, V = ours.config.hidden_size, ours.config.vocab_size
    assert pre.num_parameters() == expected + (H * H + H + 2 * H) + V + (2 * H + 2)


# ---- loading, saving, errors ------------------------------------------------------------


def test_save_pretrained_round_trips_through_hf(checkpoints, tmp_path):
    hf, path = checkpoints("BertForPreTraining", "h32-nh4-L2-ptanh")
    ours = cb.BertForPreTraining.from_pretrained(path).eval()
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.BertForPreTraining.from_pretrained(tmp_path / "ours").eval()
    ids, types, mask = batch("h32-nh4-L2-ptanh", padded=True)
    with torch.no_grad():
        assert max_diff(again(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits,
                        hf(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits) == 0
    reloaded = cb.BertForPreTraining.from_pretrained(tmp_path / "ours")
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reloaded.state_dict().values()))
    assert reloaded.cls.predictions.decoder.weight is reloaded.bert.embeddings.word_embeddings.weight
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]


def test_legacy_pytorch_model_bin(checkpoints, tmp_path):
    """pytorch_model.bin (torch.load with weights_only=True), with the spellings of old
    TF-converted checkpoints: LayerNorm gamma/beta, a position_ids buffer, tied keys present."""
    hf, path = checkpoints("BertForPreTraining", "h32-nh2-L1-erf")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(40)[None]
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = cb.BertForPreTraining.from_pretrained(tmp_path)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    ids, types, _ = batch("h32-nh2-L1-erf", padded=False)
    with torch.no_grad(), backend.force_backend("torch"):
        assert max_diff(ours.eval()(ids, token_type_ids=types).prediction_logits,
                        hf(input_ids=ids, token_type_ids=types).prediction_logits) <= ATOL


def test_encoder_checkpoint_into_head_model(checkpoints):
    """A BertModel checkpoint (no "bert." prefix) into a model with heads: the encoder
    loads, the new head is listed as missing (and kept at its initialisation)."""
    hf, path = checkpoints("BertModel", "h32-nh2-L1-erf")
    with pytest.warns(UserWarning, match=r"2 missing key\(s\).*classifier.weight"):
        ours = cb.BertForSequenceClassification.from_pretrained(path)
    assert sorted(ours.loading_info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(ours.bert.embeddings.word_embeddings.weight, hf.embeddings.word_embeddings.weight)
    with pytest.raises(KeyError, match="missing key"):
        cb.BertForSequenceClassification.from_pretrained(path, strict=True)


def test_head_checkpoint_into_encoder(checkpoints):
    hf, path = checkpoints("BertForPreTraining", "h32-nh2-L1-erf")
    with pytest.warns(UserWarning, match="unexpected key"):
        ours = cb.BertModel.from_pretrained(path)
    assert "cls.seq_relationship.weight" in ours.loading_info["unexpected_keys"]
    assert ours.loading_info["missing_keys"] == []
    assert torch.equal(ours.pooler.dense.weight, hf.bert.pooler.dense.weight)


def test_wrong_architecture_is_refused(tmp_path):
    config = transformers.RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=37)
    transformers.RobertaModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type .roberta.*RobertaModel.*loads model_type .bert."):
        cb.BertModel.from_pretrained(tmp_path)


def test_shape_mismatch_names_the_key(checkpoints):
    _, path = checkpoints("BertForSequenceClassification", "h32-nh2-L1-erf")
    with pytest.raises(ValueError, match=r"bert.embeddings.word_embeddings.weight: the checkpoint has \(97, 32\), "
                                         r"the model expects \(98, 32\)"):
        cb.BertForSequenceClassification.from_pretrained(path, vocab_size=98)
    with pytest.raises(ValueError, match=r"classifier.weight: the checkpoint has \(3, 32\), the model expects \(2, 32"):
        cb.BertForSequenceClassification.from_pretrained(path, num_labels=2)


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        cb.BertModel.from_pretrained(tmp_path)
    cb.BertModel(cb.BertConfig(**CONFIGS["h32-nh2-L1-erf"])).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        cb.BertModel.from_pretrained(tmp_path)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        cb.BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        cb.BertConfig(hidden_act="relu")
    model = cb.BertModel(cb.BertConfig(**CONFIGS["h32-nh2-L1-erf"]))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings = 40"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have input_ids' shape \(2, 5\)"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(IndexError, match=r"input_ids: .*vocab_size = 97"):
        with backend.force_backend("torch"):
            model(torch.full((1, 3), 97))


def test_config_json_round_trip(tmp_path):
    config = cb.BertConfig(**CONFIGS["h48-nh4-L2-tanh"], num_labels=4)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert cb.BertConfig.from_json(path) == config
    assert cb.BertConfig.from_json(tmp_path) == config  # a checkpoint directory works too
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    assert hf.num_labels == 4 and hf.hidden_act == "gelu_new"


def test_zz_report_measured_differences():
    """Printed last (run with -s): the largest differences measured above."""
    if not MEASURED:
        pytest.skip("run together with the parity tests")
    forward = max(v for k, v in MEASURED.items() if "grad" not in k)
    grads = [v for k, v in MEASURED.items() if "grad" in k]
    print(f"\nBERT parity over {len(MEASURED)} comparisons: max forward |diff| = {forward:.2e}, "
          f"max gradient |diff|/max|grad| = {max(grads, default=float('nan')):.2e}")
