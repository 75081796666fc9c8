"""The fused skip-gram negative-sampling step: Triton kernel against its PyTorch reference.

On the CPU the kernel runs through Triton's interpreter (``interpreter`` marker, small
shapes); on CUDA (``gpu`` marker) at word2vec's real sizes.
"""

import pytest
import torch
import torch.nn.functional as F

from course_lib.kernels import force_backend
from course_lib.kernels.sgns import sgns_step, sgns_step_reference, sgns_step_triton

LR = 0.1


def make_case(V, D, B, K, seed=0, device="cpu", V_out=None):
    g = torch.Generator().manual_seed(seed)
    V_out = V if V_out is None else V_out
    W_in = (torch.randn(V, D, generator=g) * 0.5).to(device)
    W_out = (torch.randn(V_out, D, generator=g) * 0.5).to(device)
    centres = torch.randint(0, V, (B,), generator=g).to(device)
    contexts = torch.randint(0, V_out, (B,), generator=g).to(device)
    negatives = torch.randint(0, V_out, (B, K), generator=g).to(device)
    return W_in, W_out, centres, contexts, negatives


def run_both(W_in, W_out, centres, contexts, negatives, hogwild=False):
    """(kernel tables, kernel loss), (reference tables, reference loss), from the same start."""
    k_in, k_out = W_in.clone(), W_out.clone()
    r_in, r_out = W_in.clone(), W_out.clone()
    k_loss = sgns_step_triton(k_in, k_out, centres, contexts, negatives, LR, hogwild=hogwild)
    r_loss = sgns_step_reference(r_in, r_out, centres, contexts, negatives, LR)
    return (k_in, k_out, k_loss), (r_in, r_out, r_loss)


def assert_same(kernel, reference, atol=1e-6):
    for k, r, name in zip(kernel, reference, ("W_in", "W_out", "loss")):
        torch.testing.assert_close(k, r, atol=atol, rtol=1e-5, msg=lambda m: f"{name}: {m}")


# ---- the reference itself ------------------------------------------------------------------


def test_reference_is_sgd_on_the_sgns_loss():
    """The update is -lr times the gradient of the summed loss (when no negative equals its
    context), and the loss is -log σ(u_o·v_c) - Σ log σ(-u_k·v_c)."""
    W_in, W_out, centres, contexts, negatives = make_case(V=6, D=7, B=9, K=3, seed=1, V_out=40)
    negatives = torch.where(negatives == contexts[:, None], (negatives + 1) % 40, negatives)
    a_in, a_out = W_in.clone().requires_grad_(), W_out.clone().requires_grad_()
    v = a_in[centres]
    pos = (a_out[contexts] * v).sum(-1)
    neg = (a_out[negatives] * v[:, None, :]).sum(-1)
    loss = -F.logsigmoid(pos) - F.logsigmoid(-neg).sum(-1)
    loss.sum().backward()

    r_in, r_out = W_in.clone(), W_out.clone()
    r_loss = sgns_step_reference(r_in, r_out, centres, contexts, negatives, LR)
    torch.testing.assert_close(r_loss, loss.detach())
    torch.testing.assert_close(r_in, W_in - LR * a_in.grad)
    torch.testing.assert_close(r_out, W_out - LR * a_out.grad)


def test_reference_skips_negatives_equal_to_the_context():
    W_in, W_out, centres, contexts, _ = make_case(V=5, D=4, B=3, K=0, seed=2)
    negatives = contexts[:, None].repeat(1, 3)  # every negative collides with its context
    a_in, a_out = W_in.clone(), W_out.clone()
    b_in, b_out = W_in.clone(), W_out.clone()
    loss_a = sgns_step_reference(a_in, a_out, centres, contexts, negatives, LR)
    loss_b = sgns_step_reference(b_in, b_out, centres, contexts, negatives[:, :0], LR)
    torch.testing.assert_close((a_in, a_out, loss_a), (b_in, b_out, loss_b))


# ---- kernel against reference through the interpreter ---------------------------------------


@pytest.mark.interpreter
@pytest.mark.parametrize("K", [0, 1, 2, 3, 4, 5])
def test_kernel_matches_reference(K):
    # V = 5 rows for B = 11 pairs: centres, contexts and negatives repeat many times.
    case = make_case(V=5, D=19, B=11, K=K, seed=K)
    kernel, reference = run_both(*case)
    assert_same(kernel, reference)


@pytest.mark.interpreter
@pytest.mark.parametrize("V,D,B,K", [(3, 1, 4, 2), (7, 33, 1, 5), (2, 8, 6, 7)])
def test_kernel_matches_reference_odd_shapes(V, D, B, K):
    kernel, reference = run_both(*make_case(V, D, B, K, seed=V + D))
    assert_same(kernel, reference)


@pytest.mark.interpreter
def test_kernel_empty_batch():
    W_in, W_out, centres, contexts, negatives = make_case(V=4, D=19, B=0, K=5)
    before = W_in.clone(), W_out.clone()
    loss = sgns_step_triton(W_in, W_out, centres, contexts, negatives, LR)
    assert loss.shape == (0,)
    torch.testing.assert_close((W_in, W_out), before)


@pytest.mark.interpreter
def test_hogwild_equals_exact_when_no_row_is_shared():
    """In place (Hogwild) the programs see each other's writes; with all rows distinct there
    is nothing to see, and the two modes agree."""
    B, K, D = 6, 3, 19
    W_in, W_out, _, _, _ = make_case(V=B, D=D, B=0, K=K, V_out=B * (K + 1))
    centres = torch.arange(B)
    rows = torch.randperm(B * (K + 1), generator=torch.Generator().manual_seed(0)).view(B, K + 1)
    kernel, reference = run_both(W_in, W_out, centres, rows[:, 0].contiguous(), rows[:, 1:].contiguous(), hogwild=True)
    assert_same(kernel, reference)


@pytest.mark.interpreter
def test_hogwild_in_the_interpreter_is_sequential_sgd():
    """The interpreter runs programs one after another, so in-place mode is word2vec.c's
    sequential per-pair SGD: the reference applied to one pair at a time."""
    W_in, W_out, centres, contexts, negatives = make_case(V=4, D=19, B=10, K=3, seed=3)
    k_in, k_out = W_in.clone(), W_out.clone()
    k_loss = sgns_step_triton(k_in, k_out, centres, contexts, negatives, LR, hogwild=True)
    r_in, r_out = W_in.clone(), W_out.clone()
    r_loss = torch.cat([
        sgns_step_reference(r_in, r_out, centres[i:i + 1], contexts[i:i + 1], negatives[i:i + 1], LR)
        for i in range(10)
    ])
    assert_same((k_in, k_out, k_loss), (r_in, r_out, r_loss))


@pytest.mark.interpreter
def test_dispatch_follows_the_backend():
    case = make_case(V=5, D=19, B=7, K=2, seed=4)
    results = {}
    for backend in ("triton", "torch"):
        W_in, W_out = case[0].clone(), case[1].clone()
        with force_backend(backend):
            loss = sgns_step(W_in, W_out, *case[2:], LR, hogwild=False)
        results[backend] = (W_in, W_out, loss)
    assert_same(results["triton"], results["torch"])


# ---- clear errors --------------------------------------------------------------------------


def test_errors_name_the_argument():
    W_in, W_out, centres, contexts, negatives = make_case(V=5, D=4, B=3, K=2)
    with pytest.raises(TypeError, match="W_in must have dtype in \\(float32\\), got float16"):
        sgns_step(W_in.half(), W_out, centres, contexts, negatives, LR)
    with pytest.raises(TypeError, match="centres must have dtype"):
        sgns_step(W_in, W_out, centres.float(), contexts, negatives, LR)
    with pytest.raises(ValueError, match="negatives must have 2 dimensions"):
        sgns_step(W_in, W_out, centres, contexts, negatives[:, 0], LR)
    with pytest.raises(ValueError, match="same length B, got 3, 2"):
        sgns_step(W_in, W_out, centres, contexts[:2], negatives, LR)
    with pytest.raises(ValueError, match="same number of columns"):
        sgns_step(W_in, W_out[:, :3].contiguous(), centres, contexts, negatives, LR)
    with pytest.raises(IndexError, match="contexts must be in \\[0, 5\\), got values in \\[0, 9\\]"):
        sgns_step(W_in, W_out, centres, torch.tensor([0, 9, 1]), negatives, LR)


def test_forcing_triton_without_interpreter_or_gpu_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    case = make_case(V=5, D=4, B=3, K=2)
    with force_backend("triton"), pytest.raises(RuntimeError, match="Triton backend was forced but cannot run"):
        sgns_step(*case, LR)


# ---- CUDA ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("V,D,B,K", [(50_000, 100, 8192, 5), (1000, 300, 4096, 15), (7, 19, 333, 0), (30, 1, 1, 5)])
def test_kernel_matches_reference_cuda(V, D, B, K):
    kernel, reference = run_both(*make_case(V, D, B, K, seed=5, device="cuda"))
    assert_same(kernel, reference, atol=1e-5)


@pytest.mark.gpu
def test_hogwild_cuda_equals_exact_when_no_row_is_shared():
    B, K, D = 4096, 5, 100
    W_in, W_out, _, _, _ = make_case(V=B, D=D, B=0, K=K, V_out=B * (K + 1), device="cuda")
    centres = torch.randperm(B, device="cuda")
    rows = torch.randperm(B * (K + 1), device="cuda").view(B, K + 1)
    kernel, reference = run_both(W_in, W_out, centres, rows[:, 0].contiguous(), rows[:, 1:].contiguous(), hogwild=True)
    assert_same(kernel, reference, atol=1e-5)


@pytest.mark.gpu
def test_hogwild_cuda_trains_like_the_reference():
    """With shared rows the programs read some of each other's updates: not the reference's
    numbers, but the same descent: after 20 steps both losses have fallen by similar amounts."""
    losses = {}
    for hogwild in (True, False):
        W_in, W_out, centres, contexts, negatives = make_case(2000, 64, 8192, 5, seed=7, device="cuda")
        W_in *= 0.1
        W_out *= 0.1
        for _ in range(20):
            step = sgns_step_triton if hogwild else sgns_step_reference
            loss = step(W_in, W_out, centres, contexts, negatives, 0.01)
        losses[hogwild] = loss.mean().item()
    assert abs(losses[True] - losses[False]) < 0.05 * losses[False], losses
