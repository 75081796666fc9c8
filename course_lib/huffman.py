"""The Huffman tree of hierarchical softmax, built as word2vec.c builds it.

``course_lib.word2vec`` re-exports both functions; they live here because the tree is a
data structure of its own (Huffman 1952), tested on its own against hand-worked cases and
optimality, and used only to set up hierarchical softmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["build_huffman_tree", "pad_huffman"]


def build_huffman_tree(counts: Sequence[int] | np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """The Huffman codes and paths of hierarchical softmax, built as word2vec.c builds them.

    ``counts`` must be sorted in decreasing order (as :func:`build_vocab` returns them).
    Leaves are the V words; the V - 1 inner nodes are numbered in the order they are
    created, so the root is the last one, V - 2. word2vec.c merges the two lightest nodes
    with two pointers instead of a heap: one walks the leaves from the rarest word up, the
    other the inner nodes in creation order (their weights only grow); on a tie the inner
    node wins. Of the two merged nodes, the second gets bit 1.

    Returns ``(codes, points)``: for word ``w``, ``points[w]`` are the inner nodes on the
    path from the root down to ``w``'s parent (rows of ``syn1``), and ``codes[w][d]`` is the
    branch taken at ``points[w][d]``. Hierarchical softmax trains the inner node's output
    vector to predict the label ``1 - code`` with a logistic regression at every step.
    """
    V = len(counts)
    # Leaves, then inner nodes; an inner node not created yet weighs "infinity" (word2vec.c: 1e15).
    weight = [int(c) for c in counts] + [math.inf] * (V - 1)
    parent = [0] * (2 * V - 1)
    bit = [0] * (2 * V - 1)
    leaf, inner = V - 1, V  # the lightest unused leaf (the rarest word) and inner node

    def pop_lightest() -> int:
        nonlocal leaf, inner
        if leaf >= 0 and weight[leaf] < weight[inner]:
            leaf -= 1
            return leaf + 1
        inner += 1
        return inner - 1

    for a in range(V - 1):  # create inner node V + a
        first, second = pop_lightest(), pop_lightest()
        weight[V + a] = weight[first] + weight[second]
        parent[first] = parent[second] = V + a
        bit[second] = 1

    root = 2 * V - 2
    codes, points = [], []
    for w in range(V):
        code, point, node = [], [], w
        while node != root:  # climb to the root, then read the path top-down
            code.append(bit[node])
            point.append(parent[node] - V)
            node = parent[node]
        codes.append(code[::-1])
        points.append(point[::-1])
    return codes, points


def pad_huffman(codes: list[list[int]], points: list[list[int]], device) -> tuple[torch.Tensor, ...]:
    """Pad codes and points into (V, L) tensors plus the (V,) code lengths."""
    V = len(codes)
    L = max(1, max((len(c) for c in codes), default=1))
    code_table = np.zeros((V, L), dtype=np.float32)
    point_table = np.zeros((V, L), dtype=np.int64)
    for w, (code, point) in enumerate(zip(codes, points)):
        code_table[w, : len(code)] = code
        point_table[w, : len(point)] = point
    lengths = np.array([len(c) for c in codes], dtype=np.int64)
    return tuple(torch.from_numpy(t).to(device) for t in (code_table, point_table, lengths))
