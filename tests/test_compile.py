"""attention_from inside torch.compile: a custom operator with fake and autograd
implementations (torch.library.opcheck), no graph break, at most one recompilation for new
sequence lengths, and the same numbers as eager."""

import pytest
import torch

import patternc

PATTERN = "global(first) + window(left=6, right=2) + random(1, block=8)"


def _args(lq=24, lk=30, hq=4, hkv=2, d=16, backend="reference", q_offset=None, transposed=False):
    gen = torch.Generator().manual_seed(lq * 1000 + lk)

    def make(h, n):  # transposed: stored [B, L, H, D] and viewed as [B, H, L, D], as models do
        x = torch.randn(2, n, h, d, generator=gen).transpose(1, 2) if transposed else torch.randn(2, h, n, d, generator=gen)
        return x.requires_grad_()

    q, k, v = make(hq, lq), make(hkv, lk), make(hkv, lk)
    text = str(patternc.parse(PATTERN))
    return (q, k, v, text, 0.3, q_offset, backend, "{}")


@pytest.mark.parametrize("backend,q_offset,transposed", [("reference", None, False), ("reference", 5, False),
                                                        ("kernels", None, False), ("reference", None, True),
                                                        ("kernels", None, True)])
def test_opcheck(backend, q_offset, transposed):
    """Fake and real implementations agree on shapes *and strides* (inductor asserts them: a
    transposed q once failed a compiled backward on the GPU)."""
    torch.library.opcheck(torch.ops.patternc.attention.default,
                          _args(backend=backend, q_offset=q_offset, transposed=transposed))


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


@pytest.mark.parametrize("backend", ["reference", "kernels"])
@pytest.mark.parametrize("op", ["attention", "attention_backward"])
def test_fake_and_real_outputs_have_the_same_strides(backend, op):
    """Inductor asserts that a custom op's outputs have the strides its fake promised: a
    compiled backward over a transposed q (the usual [B, L, H, D] view) once failed on the GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    q, k, v, text, scale, q_offset, _, options = _args(backend=backend, transposed=True)
    if op == "attention":
        args = (q, k, v, text, scale, q_offset, backend, options)
    else:
        o, lse = torch.ops.patternc.attention(q, k, v, text, scale, q_offset, backend, options)
        args = (q, k, v, o, lse, torch.randn(o.shape).transpose(1, 2).contiguous().transpose(1, 2), None,
                text, scale, q_offset, backend, options)
    fn = getattr(torch.ops.patternc, op).default
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    real = fn(*args)
    mode = FakeTensorMode()
    fakes = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    with mode:
        fake = fn(*fakes)
    assert [t.stride() for t in real] == [t.stride() for t in fake]


@pytest.mark.parametrize("backend", ["reference", "kernels"])
def test_eager_and_custom_op_paths_agree(backend):
    """Plain eager calls take `op.attention_eager` (no custom-op machinery): the same outputs and
    gradients as the custom op, and no silent second derivative (the op has none either)."""
    from patternc.ops import op

    q, k, v, *rest = _args(backend=backend, transposed=True)
    assert op.entry(q) is op.attention_eager
    results = []
    for fn in (op.attention_eager, torch.ops.patternc.attention):
        out, lse = fn(q, k, v, *rest)
        results.append((out, lse, *torch.autograd.grad((out * out).sum() + lse.sum(), (q, k, v))))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)
    out, _ = op.attention_eager(q, k, v, *rest)
    (dq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(dq.sum(), q)


def test_modules_under_fake_tensors_use_the_custom_op():
    """FakeTensorMode (meta-init, memory estimates, tracing without dynamo) needs the op's fake
    implementation: the eager path would run real code on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    attn = patternc.attention_from(PATTERN)
    with FakeTensorMode():
        q, k, v = torch.randn(2, 4, 24, 16), torch.randn(2, 2, 30, 16), torch.randn(2, 2, 30, 16)
        out = attn(q, k, v)
    assert out.shape == q.shape and type(out).__name__ == "FakeTensor"
