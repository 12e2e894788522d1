"""FlexAttention mask_mods from patternc patterns, for side-by-side benchmarks.

The mask_mod is built from the pattern tree with the same predicates as the language's
definition (closed-form comparisons; random through a small captured block table), so
FlexAttention gets the fairest possible mask, not a dense lookup."""

import torch

from patternc import pattern as pt


def mask_mod_for(pattern: pt.Pattern, q_len: int, kv_len: int, device="cuda"):
    shift = kv_len - q_len

    def build(node):
        if isinstance(node, pt.Window):
            return lambda q, kv: (kv >= q + shift - node.left) & (kv <= q + shift + node.right)
        if isinstance(node, pt.Causal):
            return lambda q, kv: kv <= q + shift
        if isinstance(node, pt.All):
            return lambda q, kv: kv >= 0
        if isinstance(node, pt.Global):
            spans = pt.global_intervals(pattern, node, kv_len)

            def in_g(x):
                out = x < 0
                for lo, hi in spans:
                    out = out | ((x >= lo) & (x < hi))
                return out

            return lambda q, kv: in_g(kv) | in_g(q + shift)
        if isinstance(node, pt.Random):
            table = pt.random_table(node, q_len, kv_len)
            chosen = torch.zeros(table.shape[0], -(-kv_len // node.block), dtype=torch.bool)
            chosen.scatter_(1, table, True)
            chosen = chosen.to(device)
            return lambda q, kv: chosen[q // node.block, kv // node.block]
        parts = [build(t) for t in node.terms]
        if isinstance(node, pt.Union):
            def union(q, kv):
                out = parts[0](q, kv)
                for f in parts[1:]:
                    out = out | f(q, kv)
                return out
            return union

        def intersect(q, kv):
            out = parts[0](q, kv)
            for f in parts[1:]:
                out = out & f(q, kv)
            return out
        return intersect

    fn = build(pattern.root)
    return lambda b, h, q_idx, kv_idx: fn(q_idx, kv_idx)
