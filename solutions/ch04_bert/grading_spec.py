"""Independent checks for ch04_bert.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with the
``course_lib`` references those cells use (``WordPieceTokenizer.word_to_pieces``,
``flash_attention`` and ``bias_gelu_forward_reference`` in plain PyTorch, ``BertEmbeddings``,
``parameter_count``). The grader runs the student's functions on these inputs in a fresh
sandboxed process and compares the results here, outside it.

``mask_tokens`` is random: there is no reference output to match. Its reference returns what
the comparison needs, and :func:`compare_masking` checks the invariants and statistics that the
notebook's ``_check_masking`` checks.
"""

from __future__ import annotations

import torch

from course_lib.autograde.spec import AssignmentSpec, case, task_checks
from course_lib.grading import GradingError
from course_lib.kernels import force_backend
from course_lib.kernels.bias_gelu import bias_gelu_forward_reference
from course_lib.kernels.flash_attention import flash_attention
from course_lib.models.bert import BertConfig, BertEmbeddings, parameter_count
from course_lib.tokenization import WordPieceTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---- references ---------------------------------------------------------------------------


def wordpiece_encode_reference(word, vocab, unk="[UNK]", prefix="##", max_chars=100):
    # As the notebook's tests: the tokenizer wants the special tokens in its vocabulary; the
    # words are plain letters, so the extra entries never match.
    tokenizer = WordPieceTokenizer(SPECIALS + sorted(vocab), max_input_chars_per_word=max_chars, unk_token=unk,
                                   continuing_subword_prefix=prefix)
    return tokenizer.word_to_pieces(word)


def mask_tokens_reference(input_ids, vocab_size, mask_token_id, special_ids, generator, mlm_probability=0.15):
    """No answer to match: what :func:`compare_masking` needs to judge one."""
    return {"input_ids": input_ids, "vocab_size": vocab_size, "mask_token_id": mask_token_id,
            "special_ids": list(special_ids), "mlm_probability": mlm_probability}


def compare_masking(got, want) -> None:
    """The checks of the notebook's ``_check_masking`` (statistics included), on the result alone.

    It cannot see whether ``input_ids`` was modified in place (the sandbox's copy of the input
    never comes back); the notebook's test checks that, and a score counts only when both agree."""
    ids, vocab_size, mask_id = want["input_ids"], want["vocab_size"], want["mask_token_id"]
    specials = torch.tensor(want["special_ids"])
    if type(got) is not tuple or len(got) != 2:
        raise GradingError(f"expected a tuple (inputs, labels), got {_describe(got)}")
    inputs, labels = got
    for name, t in (("inputs", inputs), ("labels", labels)):
        if type(t) is not torch.Tensor:
            raise GradingError(f"{name}: expected a torch.Tensor, got {_describe(t)}")
    if inputs.shape != ids.shape or labels.shape != ids.shape or inputs.dtype != ids.dtype:
        raise GradingError(f"shape/dtype: expected inputs and labels of shape {tuple(ids.shape)}, inputs of dtype "
                           f"{ids.dtype}; got {tuple(inputs.shape)} {inputs.dtype} and {tuple(labels.shape)}")
    special = torch.isin(ids, specials)
    selected = labels != -100
    if (selected & special).any():
        raise GradingError("a special token was selected")
    if not torch.equal(labels[selected], ids[selected]):
        raise GradingError("labels must hold the original ids (and -100 elsewhere)")
    if not torch.equal(inputs[~selected], ids[~selected]):
        raise GradingError("unselected tokens must stay unchanged")
    if torch.isin(inputs[selected & (inputs != mask_id)], specials).any():
        raise GradingError("a random replacement is a special token")
    if not ((inputs >= 0) & (inputs < vocab_size)).all():
        raise GradingError("ids out of range")
    # The statistics, with the notebook's bounds (every case is a large batch at p = 0.15).
    frac = int(selected.sum()) / int((~special).sum())
    if abs(frac - want["mlm_probability"]) >= 0.01:
        raise GradingError(f"{frac:.3f} of the non-special tokens were selected, expected {want['mlm_probability']}")
    masked = (inputs[selected] == mask_id).float().mean().item()
    kept = (inputs[selected] == ids[selected]).float().mean().item()
    other = 1 - masked - kept
    if abs(masked - 0.8) >= 0.03:
        raise GradingError(f"{masked:.3f} of the selected tokens became [MASK], expected 0.8")
    if abs(kept - 0.1) >= 0.03:
        raise GradingError(f"{kept:.3f} of the selected tokens stayed unchanged, expected about 0.1")
    if abs(other - 0.1) >= 0.03:
        raise GradingError(f"{other:.3f} of the selected tokens became random tokens, expected 0.1")


def _describe(value) -> str:
    if isinstance(value, dict) and set(value) == {"$unsendable"}:
        return str(value["$unsendable"])
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def attention_reference(q, k, v, attention_mask):
    with force_backend("torch"):
        return flash_attention(q, k, v, attention_mask)


def gelu_reference(x, approximate="none"):
    return bias_gelu_forward_reference(x, torch.zeros(x.shape[-1:], dtype=x.dtype), approximate)


def bert_embeddings_reference(input_ids, token_type_ids, word, position, token_type, gamma, beta, eps=1e-12):
    """course_lib's BertEmbeddings with the given tables loaded (eval: no dropout)."""
    V, H = word.shape
    config = BertConfig(vocab_size=V, hidden_size=H, num_attention_heads=1, max_position_embeddings=position.shape[0],
                        type_vocab_size=token_type.shape[0], layer_norm_eps=eps)
    module = BertEmbeddings(config).to(word.dtype).eval()
    with torch.no_grad():
        for p, value in zip((module.word_embeddings.weight, module.position_embeddings.weight,
                             module.token_type_embeddings.weight, module.LayerNorm.weight, module.LayerNorm.bias),
                            (word, position, token_type, gamma, beta)):
            p.copy_(value)
        with force_backend("torch"):
            return module(input_ids, token_type_ids)


def bert_parameter_count_reference(vocab_size, hidden_size, num_layers, intermediate_size, max_position,
                                   type_vocab_size=2):
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=1, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position, type_vocab_size=type_vocab_size)
    return parameter_count(config)["total"]


def _int(r: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=r))


# ---- the visible tests' questions ---------------------------------------------------------

_VOCAB = {"un", "##aff", "##able", "##a", "##f", "##b", "##l", "##e", "play", "##ing", "p", "##l", "##ay", "a"}

_MASK_IDS = torch.randint(5, 50, (64, 128), generator=torch.Generator().manual_seed(0))
_MASK_IDS[:, 0], _MASK_IDS[:, 60], _MASK_IDS[:, -10:] = 2, 3, 0  # [CLS], [SEP], [PAD]

# One head, one query (twice), two keys (the visible cell looks at [0, 0, 0] of the whole result).
_Q = torch.tensor([[[[0.0, 0.0, 0.0, 2.0]]]]).expand(1, 1, 2, 4).contiguous()
_K = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]]])
_V = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]]])
_g = torch.Generator().manual_seed(3)
_QKV = tuple(torch.randn(2, 3, 7, 8, generator=_g) for _ in range(3))

_X = torch.linspace(-6, 6, 101)

_g = torch.Generator().manual_seed(5)
_EMB_IDS = torch.randint(0, 30, (2, 9), generator=_g)
_EMB_TYPES = torch.tensor([[0] * 5 + [1] * 4] * 2)
_EMB_ARGS = (torch.randn(30, 16, generator=_g), torch.randn(12, 16, generator=_g), torch.randn(2, 16, generator=_g),
             torch.rand(16, generator=_g) + 0.5, torch.randn(16, generator=_g))

VISIBLE = {
    "wordpiece_encode": [
        *(case(w, _VOCAB) for w in ("unaffable", "playing", "a", "unx", "xun")),
        case("unaffable", _VOCAB, max_chars=5),
        *(case(w, _VOCAB) for w in ("unaffable", "playing", "unable", "unaffablea", "plain", "playl")),
    ],
    "mask_tokens": [
        case(_MASK_IDS, 50, 4, [0, 1, 2, 3, 4], torch.Generator().manual_seed(1)),
    ],
    "attention": [
        case(_Q, _K, _V, torch.tensor([[1, 1]])),
        case(_Q, _K, _V, torch.tensor([[1, 0]])),  # the second key is padding
        case(*_QKV, torch.tensor([[1] * 7, [1] * 4 + [0] * 3])),
    ],
    "gelu": [
        case(torch.tensor(0.0)),
        case(torch.tensor(1.0, dtype=torch.float64)),
        case(torch.tensor(1.0, dtype=torch.float64), "tanh"),
        case(torch.tensor(-3.0, dtype=torch.float64), "tanh"),
        case(_X, "none"),
        case(_X, "tanh"),
    ],
    "bert_embeddings": [
        # H = 2: LayerNorm of any vector (a, b) with a != b is (±1, ∓1) up to eps.
        case(torch.tensor([[1, 2]]), torch.tensor([[0, 0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]),
             torch.zeros(4, 2), torch.zeros(2, 2), torch.ones(2), torch.zeros(2)),
        case(_EMB_IDS, _EMB_TYPES, *_EMB_ARGS, eps=1e-12),
    ],
    "bert_parameter_count": [
        case(30522, 768, 12, 3072, 512),  # BERT-base: 109,482,240
        case(30522, 1024, 24, 4096, 512),  # BERT-large: 335,141,888
        case(50, 8, 2, 12, 10),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_wordpiece_encode(r: torch.Generator) -> list:
    letters = "abcde"

    def rand_str(lo, hi):
        n = _int(r, lo, hi + 1)
        return "".join(letters[int(i)] for i in torch.randint(0, len(letters), (n,), generator=r))

    def from_pieces(firsts, continuations):
        """A word glued from vocabulary pieces: mostly spellable, though not always along the
        pieces it was glued from (longest match first may take another path, or get stuck)."""
        word = firsts[_int(r, 0, len(firsts))]
        for _ in range(_int(r, 1, 4)):
            word += continuations[_int(r, 0, len(continuations))][2:]
        return word

    cases = []
    for _ in range(4):
        vocab = {rand_str(1, 4) for _ in range(12)} | {"##" + rand_str(1, 3) for _ in range(15)}
        vocab -= {"##" + letters[_int(r, 0, 5)]}  # leave a hole: some words fail
        firsts = sorted(v for v in vocab if not v.startswith("##"))
        continuations = sorted(v for v in vocab if v.startswith("##"))
        # Random strings (mostly [UNK]: the hole) as in the notebook, and words made of pieces.
        words = [rand_str(1, 9) for _ in range(15)] + [from_pieces(firsts, continuations) for _ in range(15)]
        cases += [case(w, set(vocab)) for w in words]
        # Too long for max_chars=5: a word the vocabulary spells, so only max_chars makes it [UNK].
        long = [w for w in (from_pieces(firsts, continuations) for _ in range(40))
                if len(w) > 5 and wordpiece_encode_reference(w, vocab) != ["[UNK]"]]
        cases.append(case(long[0] if long else rand_str(6, 9), set(vocab), max_chars=5))
    return cases


def hidden_mask_tokens(r: torch.Generator) -> list:
    cases = []
    for _ in range(3):
        V = _int(r, 8, 300)
        n_special = _int(r, 2, 6)
        specials = torch.randperm(V, generator=r)[:n_special].tolist()
        B, T = 96, _int(r, 60, 140)
        ids = torch.randint(0, V, (B, T), generator=r)
        seed = _int(r, 0, 2**31)
        cases.append(case(ids, V, specials[0], specials, torch.Generator().manual_seed(seed)))
    return cases


def hidden_attention(r: torch.Generator) -> list:
    cases = []
    for n in range(4):
        dtype = (torch.float32, torch.float64)[n % 2]
        B, nh, T, hs = (_int(r, 1, high) for high in (4, 5, 20, 17))
        q, k, v = (torch.randn(B, nh, T, hs, generator=r, dtype=dtype) * 2 for _ in range(3))
        lengths = torch.randint(1, T + 1, (B,), generator=r)  # every row keeps at least one real key
        cases.append(case(q, k, v, (torch.arange(T)[None, :] < lengths[:, None]).long()))
    return cases


def hidden_gelu(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        dtype = (torch.float32, torch.float64)[n % 2]
        approximate = ("none", "tanh")[(n // 2) % 2]
        shape = torch.randint(1, 9, (_int(r, 1, 4),), generator=r).tolist()
        cases.append(case(torch.randn(shape, generator=r, dtype=dtype) * 4, approximate))
    return cases


def hidden_bert_embeddings(r: torch.Generator) -> list:
    cases = []
    f64 = torch.float64
    for n in range(4):
        V, H, P = (_int(r, lo, hi) for lo, hi in ((5, 60), (2, 24), (8, 20)))
        B, T = _int(r, 1, 4), _int(r, 1, P + 1)
        ids = torch.randint(0, V, (B, T), generator=r)
        types = (torch.arange(T)[None] >= torch.randint(0, T + 1, (B, 1), generator=r)).long()
        tables = (torch.randn(V, H, generator=r, dtype=f64), torch.randn(P, H, generator=r, dtype=f64),
                  torch.randn(2, H, generator=r, dtype=f64), torch.rand(H, generator=r, dtype=f64) + 0.5,
                  torch.randn(H, generator=r, dtype=f64))
        cases.append(case(ids, types, *tables, eps=(1e-12, 1e-5)[n % 2]))
    return cases


def hidden_bert_parameter_count(r: torch.Generator) -> list:
    return [case(*(_int(r, lo, hi) for lo, hi in ((10, 60000), (1, 2048), (0, 50), (1, 8192), (1, 4096), (1, 5))))
            for _ in range(8)]


# ---- the spec -----------------------------------------------------------------------------

_F32_1E5 = {torch.float32: (1e-5, 1e-5)}  # the notebook's rtol=1e-5, atol=1e-5 for float32 results

SPEC = AssignmentSpec(
    notebook="ch04_bert.ipynb",
    preamble='import math\nimport torch\nSPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]\n',
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_wordpiece", "wordpiece_encode", wordpiece_encode_reference, VISIBLE["wordpiece_encode"],
                     hidden_wordpiece_encode, (1, 2)),
        *task_checks("task2_mask_tokens", "mask_tokens", mask_tokens_reference, VISIBLE["mask_tokens"],
                     hidden_mask_tokens, (1, 2), compare=compare_masking),
        *task_checks("task3_attention", "attention", attention_reference, VISIBLE["attention"], hidden_attention,
                     (1, 2), hidden_options={"tolerances": _F32_1E5}),
        *task_checks("task4_gelu", "gelu", gelu_reference, VISIBLE["gelu"], hidden_gelu, (1, 2)),
        *task_checks("task5_embeddings", "bert_embeddings", bert_embeddings_reference, VISIBLE["bert_embeddings"],
                     hidden_bert_embeddings, (1, 2), tolerances=_F32_1E5,
                     hidden_options={"tolerances": {torch.float64: (1e-9, 1e-9)}}),
        *task_checks("task6_parameter_count", "bert_parameter_count", bert_parameter_count_reference,
                     VISIBLE["bert_parameter_count"], hidden_bert_parameter_count, (1, 2)),
    ],
)
