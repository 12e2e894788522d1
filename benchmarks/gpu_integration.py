"""Model integration on the GPU (issue 9's logs): a compiled model and a Hugging Face model, bf16.

    python benchmarks/gpu_integration.py [--transformers]   (only part 2)

1. `torch.compile(model, fullgraph=True)` (inductor) over a block using `attention_from`, at
   three sequence lengths: graphs compiled (at most 2 expected), outputs and input gradients
   against the eager model.
2. transformers: a tiny randomly initialised Llama-style model with attn_implementation set to a
   registered patternc pattern, against the eager implementation given the same dense mask
   (logits, bf16), and cached greedy generation against uncached.
"""

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patternc.integrations import transformers as hf  # noqa: E402

PATTERN = "(global(first) + window(left=255, right=0) + random(1, block=64)) & causal"


class Block(torch.nn.Module):
    def __init__(self, d=512, heads=8, kv_heads=2):
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


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def compiled_model():
    torch.manual_seed(0)
    model = Block().cuda().to(torch.bfloat16)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, example_inputs)

    compiled = torch.compile(model, fullgraph=True, backend=counting)
    reference = copy.deepcopy(model).float()  # fp32, the chunked dense reference instead of the kernels
    reference.attn = patternc.attention_from(PATTERN, backend="reference")
    for n in (1024, 2048, 4096):
        x = torch.randn(2, n, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        x32 = x.detach().float().requires_grad_()
        out, eager, ref = compiled(x), model(x), reference(x32)
        g_c = torch.autograd.grad(out.float().square().sum(), x)[0]
        g_e = torch.autograd.grad(eager.float().square().sum(), x)[0]
        g_r = torch.autograd.grad(ref.square().sum(), x32)[0]
        print(f"compiled model, n={n}: graphs so far {len(graphs)}; compiled vs eager: out {rel(out, eager):.1e}, "
              f"grad {rel(g_c, g_e):.1e}; compiled bf16 vs fp32 dense reference: out {rel(out, ref):.1e}, "
              f"grad {rel(g_c, g_r):.1e}")
    ok = len(graphs) <= 2 and any("patternc.attention" in str(g.graph) for g in graphs)
    print(f"compiled model: {len(graphs)} graph(s) for 3 lengths, patternc op in the graph: {ok}")


def transformers_model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096)
    hf.register("patternc_gpu", PATTERN)
    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="patternc_gpu")
    ours = ours.cuda().to(torch.bfloat16).eval()
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="eager")
    eager = eager.cuda().to(torch.bfloat16).eval()
    eager.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 1000, (2, 1000), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        got = ours(ids).logits
        want = eager(ids, attention_mask=hf.dense_mask_4d(PATTERN, 2, 1000, 1000).cuda()).logits
        causal = eager(ids).logits
    print(f"transformers bf16, 1000 tokens: logits rel err vs eager with the dense mask {rel(got, want):.1e} "
          f"(plain causal differs by {rel(causal, want):.1e})")
    hf.register("patternc_gen", "(global(first) + window(left=255, right=0)) & causal")
    prompt = torch.randint(0, 1000, (2, 300), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    for impl, dtype in (("patternc_gen", torch.float32), ("patternc_gen", torch.bfloat16), ("eager", torch.bfloat16)):
        gen = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=impl).cuda().eval()
        gen.load_state_dict(ours.state_dict())
        gen = gen.to(dtype)
        with_cache = gen.generate(prompt, max_new_tokens=32, do_sample=False, use_cache=True, pad_token_id=0)
        without = gen.generate(prompt, max_new_tokens=32, do_sample=False, use_cache=False, pad_token_id=0)
        new = (with_cache == without)[:, 300:]
        first = [int((~row).nonzero()[0]) if not row.all() else None for row in new]
        print(f"transformers {impl} {str(dtype).removeprefix('torch.')} generate, 32 new tokens: cached == uncached "
              f"for {new.float().mean().item():.1%} of new tokens (first difference per sequence: {first})")
    print("(the eager row, transformers' own implementation with a plain causal mask, is the bf16 baseline: "
          "greedy decoding of a random model has near-tied logits)")
    decode_step_logits(cfg, ours.state_dict(), prompt)


def decode_step_logits(cfg, state, prompt):
    """bf16: each cached decoding step's logits against the full pass over the same tokens."""
    from transformers import AutoModelForCausalLM

    gen = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="patternc_gen").cuda().eval()
    gen.load_state_dict(state)
    gen = gen.to(torch.bfloat16)
    out = gen.generate(prompt, max_new_tokens=32, do_sample=False, use_cache=True, pad_token_id=0,
                       return_dict_in_generate=True, output_logits=True)
    cached = torch.stack(out.logits, 1).float()  # [B, 32, V]: the logits each step chose its token from
    with torch.no_grad():
        full = gen(out.sequences[:, :-1]).logits[:, prompt.shape[1] - 1:].float()
    top2 = full.topk(2, -1).values
    flips = (cached.argmax(-1) != full.argmax(-1)).nonzero().tolist()
    print(f"transformers patternc_gen bfloat16, 32 cached steps vs the full pass over the same tokens: logits rel err "
          f"{rel(cached, full):.1e}, max abs diff {(cached - full).abs().max().item():.3f}; steps whose top token "
          f"differs: {flips}; their full-pass top-2 margins: "
          f"{[round((top2[b, t, 0] - top2[b, t, 1]).item(), 4) for b, t in flips]}; median margin "
          f"{(top2[..., 0] - top2[..., 1]).median().item():.3f}")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    if "--transformers" not in sys.argv:
        compiled_model()
    transformers_model()
