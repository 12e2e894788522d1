"""attention_from inside torch.compile: a custom operator with fake and autograd
implementations (torch.library.opcheck), no graph break, at most one recompilation for new
sequence lengths, and the same numbers as eager."""

import pytest
import torch

import patternc

PATTERN = "global(first) + window(left=6, right=2) + random(1, block=8)"


def _args(lq=24, lk=30, hq=4, hkv=2, d=16, backend="reference", q_offset=None):
    gen = torch.Generator().manual_seed(lq * 1000 + lk)
    q = torch.randn(2, hq, lq, d, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, hkv, lk, d, generator=gen, requires_grad=True) for _ in range(2))
    text = str(patternc.parse(PATTERN))
    return (q, k, v, text, 0.3, q_offset, backend, "{}")


@pytest.mark.parametrize("backend,q_offset", [("reference", None), ("reference", 5), ("kernels", None)])
def test_opcheck(backend, q_offset):
    torch.library.opcheck(torch.ops.patternc.attention.default, _args(backend=backend, q_offset=q_offset))


class TinyBlock(torch.nn.Module):
    def __init__(self, d=32, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.q = torch.nn.Linear(d, d)
        self.kv = torch.nn.Linear(d, 2 * kv_heads * self.hd)
        self.attn = patternc.attention_from(PATTERN)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.hd).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.hd).permute(2, 0, 3, 1, 4)
        return self.attn(q, k, v).transpose(1, 2).reshape(b, n, -1)


def test_compiled_model_fullgraph_recompiles_at_most_once_for_new_lengths():
    torch.manual_seed(0)
    model = TinyBlock()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, fullgraph=True, backend=counting_backend)
    for n in (40, 56, 72):
        x = torch.randn(2, n, 32, requires_grad=True)
        out = compiled(x)
        eager = model(x)
        assert torch.allclose(out, eager, atol=1e-5), n
        g_compiled = torch.autograd.grad(out.square().sum(), x)[0]
        g_eager = torch.autograd.grad(eager.square().sum(), x)[0]
        assert torch.allclose(g_compiled, g_eager, atol=1e-4), n
    assert 1 <= len(graphs) <= 2, len(graphs)
    assert any("patternc.attention" in str(gm.graph) for gm in graphs)
