"""course_lib.pretraining: MLM masking statistics and invariants, NSP pairs, and a
training loop whose checkpoints resume exactly."""

import math
import random

import pytest
import torch

from course_lib import pretraining as P
from course_lib.kernels import backend
from course_lib.models import BertConfig, BertForPreTraining

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
V = 1000


def sample_batch(B=64, T=512, seed=0):
    """Ids with [CLS] ... [SEP] ... [SEP] and a padded tail of random length per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids[:, 0], ids[:, T // 3] = CLS, SEP
    ids[torch.arange(B), lengths - 1] = SEP
    ids[:, 7] = UNK
    return ids.masked_fill(mask == 0, PAD), mask


def masked(ids, mask, seed=0, **kwargs):
    return P.mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIAL, attention_mask=mask,
                         generator=torch.Generator().manual_seed(seed), **kwargs)


def within(observed, n, p, sigmas=5):
    """|observed/n - p| within `sigmas` binomial standard deviations."""
    std = math.sqrt(p * (1 - p) / n)
    return abs(observed / n - p) <= sigmas * std


def test_masking_proportions():
    ids, mask = sample_batch()
    inputs, labels = masked(ids, mask)
    candidates = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != -100
    n, k = int(candidates.sum()), int(selected.sum())
    assert n > 20_000
    assert within(k, n, 0.15), f"selected {k / n:.4f} of {n}"
    to_mask = int((inputs[selected] == MASK).sum())
    changed = int(((inputs != ids) & (inputs != MASK))[selected].sum())
    unchanged = int((inputs == ids)[selected].sum())
    assert to_mask + changed + unchanged == k
    assert within(to_mask, k, 0.8), f"[MASK] {to_mask / k:.4f}"
    # A random replacement equal to the original (probability 1/995) counts as unchanged.
    assert within(changed, k, 0.1 * (1 - 1 / (V - 5))), f"random {changed / k:.4f}"
    assert within(unchanged, k, 0.1 + 0.1 / (V - 5)), f"unchanged {unchanged / k:.4f}"
    print(f"selected {k / n:.4f}; of those [MASK] {to_mask / k:.4f}, random {changed / k:.4f}, "
          f"kept {unchanged / k:.4f}")


def test_masking_invariants():
    ids, mask = sample_batch(B=16, T=128, seed=1)
    inputs, labels = masked(ids, mask, seed=1)
    special_or_pad = torch.isin(ids, torch.tensor(SPECIAL)) | (mask == 0)
    assert (labels[special_or_pad] == -100).all()  # never selected
    assert torch.equal(inputs[special_or_pad], ids[special_or_pad])  # never altered
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])  # the label is the original token
    assert torch.equal(inputs[~selected], ids[~selected])  # nothing else changes
    random_replacements = inputs[selected & (inputs != MASK) & (inputs != ids)]
    assert len(random_replacements) > 0 and not torch.isin(random_replacements, torch.tensor(SPECIAL)).any()
    assert ((inputs >= 0) & (inputs < V)).all()
    assert inputs.dtype == ids.dtype and labels.dtype == ids.dtype


def test_masking_is_seeded():
    ids, mask = sample_batch(B=4, T=64)
    a, b, c = masked(ids, mask, seed=5), masked(ids, mask, seed=5), masked(ids, mask, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_masking_extremes_and_no_attention_mask():
    ids, mask = sample_batch(B=4, T=64)
    inputs, labels = masked(ids, mask, mlm_probability=1.0, mask_probability=1.0, random_probability=0.0)
    candidates = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    assert torch.equal(labels != -100, candidates) and (inputs[candidates] == MASK).all()
    inputs, labels = P.mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIAL)
    assert (labels[ids == PAD] == -100).all()  # [PAD] is special: excluded without a mask too
    with pytest.raises(ValueError, match="probabilities"):
        masked(ids, mask, mask_probability=0.95, random_probability=0.1)


@pytest.mark.gpu
def test_masking_runs_on_cuda():
    ids, mask = (t.cuda() for t in sample_batch(B=8, T=128))
    g = torch.Generator(device="cuda").manual_seed(0)
    inputs, labels = P.mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIAL,
                                   attention_mask=mask, generator=g)
    assert inputs.is_cuda and labels.is_cuda


# ---- NSP --------------------------------------------------------------------------------


def synthetic_documents(n_docs=120, seed=0):
    """Token t = 10000 * document + position: an example's tokens reveal where they came from."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        pos, doc = 0, []
        for _ in range(rng.randint(3, 30)):
            n = rng.randint(1, 25)
            doc.append([10_000 * d + pos + i for i in range(n)])
            pos += n
        docs.append(doc)
    return docs


def test_nsp_pairs_balance_and_labels():
    docs = synthetic_documents(400)
    examples = P.create_nsp_examples(docs, max_num_tokens=61, rng=random.Random(0))
    n, random_next = len(examples), sum(e.is_random_next for e in examples)
    assert n > 1000
    assert within(random_next, n, 0.5), f"{random_next / n:.3f} of {n} are random"
    for e in examples:
        assert len(e.tokens_a) >= 1 and len(e.tokens_b) >= 1
        assert len(e.tokens_a) + len(e.tokens_b) <= 61
        doc_a, doc_b = {t // 10_000 for t in e.tokens_a}, {t // 10_000 for t in e.tokens_b}
        assert len(doc_a) == 1 and len(doc_b) == 1  # A and B are each from one document
        if e.is_random_next:
            assert doc_a != doc_b
        else:  # B is from A's document and comes after it
            assert doc_a == doc_b and min(e.tokens_b) > max(e.tokens_a)
        # Truncation only trims ends: each side is a run of consecutive positions.
        for side in (e.tokens_a, e.tokens_b):
            if not e.is_random_next or side is e.tokens_a:
                assert side == list(range(side[0], side[0] + len(side)))
    print(f"{n} NSP pairs, {random_next / n:.3f} NotNext")


def test_truncate_seq_pair_cuts_the_longer_side():
    a, b = list(range(10)), list(range(100, 103))
    P.truncate_seq_pair(a, b, 8, random.Random(0))
    assert len(a) == 5 and b == [100, 101, 102]
    assert a == list(range(a[0], a[0] + 5))  # a contiguous piece: cut at the front and/or back
    a, b = list(range(6)), list(range(100, 106))
    P.truncate_seq_pair(a, b, 9, random.Random(0))
    assert (len(a), len(b)) == (5, 4)  # on a tie B is cut first: (6,6) -> (6,5) -> (5,5) -> (5,4)


def test_encode_examples_format():
    examples = [P.NSPExample([10, 11], [12], False), P.NSPExample([20], [30, 31, 32], True)]
    t = P.encode_examples(examples, cls_id=CLS, sep_id=SEP, pad_id=PAD, max_length=8)
    assert t["input_ids"].tolist() == [[CLS, 10, 11, SEP, 12, SEP, PAD, PAD], [CLS, 20, SEP, 30, 31, 32, SEP, PAD]]
    assert t["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0]]
    assert t["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]]
    assert t["next_sentence_label"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="more than max_length"):
        P.encode_examples(examples, cls_id=CLS, sep_id=SEP, pad_id=PAD, max_length=6)
    with pytest.raises(ValueError, match="at least 2 documents"):
        P.create_nsp_examples(synthetic_documents(1), 20, random.Random(0))


def test_stdlib_pretraining_data():
    tok, t = P.stdlib_pretraining_data(vocab_size=400, max_length=32, max_sentences=400)
    N = len(t["input_ids"])
    assert t["input_ids"].shape == (N, 32) and N > 50
    assert (t["input_ids"][:, 0] == tok.cls_token_id).all()
    assert ((t["input_ids"] == tok.sep_token_id).sum(1) == 2).all()
    assert 0.3 < t["next_sentence_label"].float().mean() < 0.7


# ---- training ---------------------------------------------------------------------------


def tiny_setup(seed=0):
    # Sentences of Zipf-distributed tokens: the untrained loss is log(V), and the
    # unigram statistics alone take it about a nat lower (entropy of the Zipf law: ~3.6 nats).
    rng = random.Random(seed)
    weights = [1 / (r + 1) for r in range(97)]
    docs = [[rng.choices(range(5, 102), weights, k=rng.randint(3, 20)) for _ in range(rng.randint(3, 20))]
            for _ in range(60)]
    examples = P.create_nsp_examples(docs, max_num_tokens=29, rng=random.Random(seed))
    data = P.encode_examples(examples, cls_id=CLS, sep_id=SEP, pad_id=PAD, max_length=32)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=102, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    return BertForPreTraining(config), data


def run(model, data, config, **kwargs):
    with backend.force_backend("torch"):
        return P.pretrain(model, data, config, mask_token_id=MASK, special_token_ids=SPECIAL, progress=False, **kwargs)


def test_loss_goes_down():
    model, data = tiny_setup()
    history = run(model, data, P.PretrainingConfig(max_steps=60, batch_size=16, lr=3e-3, warmup_steps=5, log_every=10))
    assert history[0]["step"] == 1 and history[-1]["step"] == 60
    first, last = history[0]["mlm_loss"], history[-1]["mlm_loss"]
    assert abs(first - math.log(102)) < 0.5  # untrained: about uniform over the vocabulary
    assert last < first - 0.6, (first, last)
    assert not model.training  # left in eval mode


def test_checkpoint_resume_continues_identically(tmp_path):
    config = P.PretrainingConfig(max_steps=6, batch_size=16, lr=1e-3, warmup_steps=2, log_every=2, checkpoint_every=3)
    straight, data = tiny_setup()
    history = run(straight, data, config, checkpoint_dir=tmp_path / "a")

    first, _ = tiny_setup()
    run(first, data, config, checkpoint_dir=tmp_path / "b", until=4)  # stops after step 4 (checkpoints at 3 and 4)
    assert P.latest_checkpoint(tmp_path / "b").name == "step-000004"
    files = sorted(p.name for p in P.latest_checkpoint(tmp_path / "b").iterdir())
    assert files == ["config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]  # no pickle

    torch.manual_seed(123)  # a differently initialised model: everything must come from the checkpoint
    resumed = BertForPreTraining(straight.config)
    history_resumed = run(resumed, data, config, checkpoint_dir=tmp_path / "b")
    assert history_resumed == history
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_learning_rate_schedule():
    config = P.PretrainingConfig(max_steps=100, lr=1.0, warmup_steps=10)
    lrs = [P.learning_rate(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5) and lrs[99] == pytest.approx(1 / 90)
