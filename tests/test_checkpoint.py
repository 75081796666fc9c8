"""course_lib.models.checkpoint (shared by every model) and course_lib.models.layers.attend.

The per-model parity tests (test_bert.py, ...) load checkpoints that Hugging Face saved;
these tests cover what those do not: sharded checkpoints, files that are not what they
claim to be, and the two paths of the shared attention core agreeing."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from course_lib.kernels import backend
from course_lib.models import bert as cb
from course_lib.models.checkpoint import read_config, read_weights
from course_lib.models.layers import activation, attend, linear_act

TINY = cb.BertConfig(vocab_size=31, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=20)  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = cb.BertForPreTraining(TINY).eval()
    model.save_pretrained(tmp_path / "one")
    return model, tmp_path


def test_sharded_checkpoint_loads_like_one_file(saved):
    model, tmp = saved
    state = read_weights(tmp / "one")
    keys = sorted(state)
    shard_dir = tmp / "sharded"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((tmp / "one" / "config.json").read_text())
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(shard_dir / name))
    weight_map = {k: name for name, part in halves.items() for k in part}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    again = cb.BertForPreTraining.from_pretrained(shard_dir, strict=True).eval()
    ids = torch.randint(0, 31, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(again(ids).prediction_logits, model(ids).prediction_logits)
    # An index that names a shard which is not there.
    (shard_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists the shard model-00002-of-00002.safetensors"):
        cb.BertForPreTraining.from_pretrained(shard_dir)


def test_files_that_are_not_checkpoints(tmp_path, saved):
    _, tmp = saved
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        read_config(bad, ("bert",), "BertModel")
    (bad / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_config(bad, ("bert",), "BertModel")
    (bad / "config.json").write_text((tmp / "one" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        cb.BertModel.from_pretrained(bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        cb.BertModel.from_pretrained(bad)
    (bad / "model.safetensors").unlink()
    (bad / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="has no 'weight_map'"):
        cb.BertModel.from_pretrained(bad)


# ---- the shared attention core ----------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_attend_paths_agree(causal):
    # The materialised path (probabilities wanted) and the flash path compute the same y.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with backend.force_backend("torch"):
        y_flash, none = attend(q, k, v, attention_mask=mask, causal=causal, bias=bias)
        y_mat, probs = attend(q, k, v, attention_mask=mask, causal=causal, bias=bias, need_weights=True)
    assert none is None
    torch.testing.assert_close(y_mat, y_flash)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 6, dtype=torch.float64))
    assert (probs[1, :, :, 4:] == 0).all()  # padding keys get no weight
    if causal:
        assert (probs.triu(1) == 0).all()
    scores = q @ k.transpose(-2, -1) / math.sqrt(8) + bias
    torch.testing.assert_close(probs[0, :, 0, 0], torch.ones(3, dtype=torch.float64) if causal
                               else torch.softmax(scores[0, :, 0], -1)[:, 0])  # fmt: skip


def test_attend_dropout_only_in_the_materialised_path():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 5, 4, generator=g) for _ in range(3))
    torch.manual_seed(0)
    y, _ = attend(q, k, v, dropout=0.5)
    with backend.force_backend("torch"):
        y0, _ = attend(q, k, v)
    assert not torch.allclose(y, y0)  # probabilities were dropped (and the rest scaled by 2)


def test_activations_by_hf_name():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(activation("gelu")(x), torch.nn.functional.gelu(x))
    torch.testing.assert_close(activation("gelu_new")(x), torch.nn.functional.gelu(x, approximate="tanh"))
    torch.testing.assert_close(activation("relu")(x), x.clamp_min(0))
    lin = torch.nn.Linear(13, 5)
    with backend.force_backend("torch"):
        torch.testing.assert_close(linear_act(x, lin, "gelu"), torch.nn.functional.gelu(lin(x)))
        torch.testing.assert_close(linear_act(x, lin, "relu"), torch.relu(lin(x)))
    with pytest.raises(ValueError, match="the activation must be one of"):
        activation("swish")
