"""A tiny causal transformer LM whose attention is a patternc pattern, trained on associative recall.

Each sequence starts with key-value pairs ``k1 v1 ... kP vP``, then random filler tokens, and ends
with the same keys in another order, each followed by its value: the model must predict those
values (only they are trained and scored). The queries sit farther from the pairs than a sliding
window can reach through all the model's layers, so the plain window can only guess (chance:
1/16), while the same window plus global tokens on the pairs (and random blocks) can read them. The
two patterns cost the same: the window is widened until it attends at least as many (query, key)
pairs as the sparse pattern; both densities are computed by patternc (`Pattern.layout`) and printed.

    python examples/tiny_lm.py --device cpu                # both patterns, patternc (CPU: reference path)
    python examples/tiny_lm.py --device cuda --compare     # + tokens/s with patternc, SDPA and flex
    python examples/tiny_lm.py --device cuda --attn flex --patterns sparse

``--attn``: ``patternc`` (`attention_from`), ``sdpa`` (`scaled_dot_product_attention` with the
pattern's dense boolean mask), ``flex`` (`flex_attention`, compiled on CUDA, with the BlockMask of
`Pattern.to_flex`). ``--compare`` trains the sparse pattern with each of the three, the window with
patternc, and a dense causal model with SDPA ``is_causal`` (a speed reference: another pattern).

The model is pre-norm (LayerNorm, attention, GELU MLP), RoPE by default, plus a previous-token
embedding ("token shift", as in RWKV): with it, recall is one attention hop from the query to the
pair, learnt in a few hundred steps; without it (``--no-token-shift``) the model needs an induction
head (two hops), which takes many more steps.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import patternc

N_KEYS, N_VALUES, N_FILLER = 16, 16, 32  # token ids: keys, then values, then filler
VOCAB = N_KEYS + N_VALUES + N_FILLER
PRESETS = {  # per device; every entry is also a flag (--seq-len ...)
    "cpu": dict(seq_len=128, batch=16, d_model=64, layers=2, heads=2, pairs=8, window=16, random=1,
                random_block=16, steps=300),
    "cuda": dict(seq_len=4096, batch=8, d_model=128, layers=2, heads=2, pairs=8, window=16, random=1,
                 random_block=16, steps=400)}


def make_batch(n, a, gen):
    """Tokens [n, seq_len + 1]: P pairs at 0 .. 2P-1, filler, P (key, value) queries in the last 2P."""
    P, L, dev = a.pairs, a.seq_len, a.device
    x = N_KEYS + N_VALUES + torch.randint(N_FILLER, (n, L + 1), generator=gen, device=dev)
    keys = torch.rand(n, N_KEYS, generator=gen, device=dev).argsort(-1)[:, :P]  # distinct keys
    vals = N_KEYS + torch.randint(N_VALUES, (n, P), generator=gen, device=dev)
    x[:, 0:2 * P:2], x[:, 1:2 * P:2] = keys, vals
    order = torch.rand(n, P, generator=gen, device=dev).argsort(-1)
    x[:, L + 1 - 2 * P::2], x[:, L + 2 - 2 * P::2] = keys.gather(1, order), vals.gather(1, order)
    return x


def query_positions(a):
    """Input positions of the query keys: the logits there predict the values."""
    return torch.arange(a.seq_len + 1 - 2 * a.pairs, a.seq_len, 2, device=a.device)


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class Block(nn.Module):
    def __init__(self, d, heads, attend):
        super().__init__()
        self.heads, self.attend = heads, attend
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, cos, sin):
        B, L, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cos is not None:
            q, k = rope(q, cos, sin), rope(k, cos, sin)
        x = x + self.proj(self.attend(q, k, v).transpose(1, 2).reshape(B, L, d))  # attend: [B, H, L, Dh]
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, a, attend):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, a.d_model)
        self.prev = nn.Embedding(VOCAB, a.d_model) if a.token_shift else None
        self.pos = None if a.rope else nn.Parameter(0.02 * torch.randn(a.seq_len, a.d_model))
        self.blocks = nn.ModuleList(Block(a.d_model, a.heads, attend) for _ in range(a.layers))
        self.norm, self.head = nn.LayerNorm(a.d_model), nn.Linear(a.d_model, VOCAB, bias=False)
        dh = a.d_model // a.heads
        t = torch.arange(a.seq_len)[:, None] / 10000 ** (torch.arange(0, dh, 2) / dh)
        self.register_buffer("cos", torch.cat([t, t], -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat([t, t], -1).sin(), persistent=False)

    def forward(self, x, at):  # logits at the positions `at` only
        h = self.embed(x)
        if self.prev is not None:  # token shift: each position also embeds the previous token
            h = h + self.prev(F.pad(x, (1, 0))[:, :-1])
        cos, sin = (self.cos, self.sin) if self.pos is None else (None, None)
        h = h if self.pos is None else h + self.pos
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.head(self.norm(h[:, at]))


def make_attend(kind, pattern, a):
    """The attention of one backend: (q, k, v) [B, H, L, Dh] -> [B, H, L, Dh]."""
    L, dev = a.seq_len, a.device
    if kind == "patternc":  # CUDA: the generated kernels; CPU: the chunked reference path
        return patternc.attention_from(pattern, backend="kernels" if dev == "cuda" else "reference")
    if kind == "sdpa":
        mask = pattern.dense_mask(L, L, device=dev)  # [L, L] bool, broadcast over batch and heads
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if kind == "sdpa-causal":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    block_mask = create_block_mask(pattern.to_flex(L, L, device=dev), None, None, L, L, device=dev)
    flex = torch.compile(flex_attention, dynamic=False) if dev == "cuda" else flex_attention
    return lambda q, k, v: flex(q, k, v, block_mask=block_mask)


def patterns(a, compare):
    """The sparse pattern, and the narrowest plain causal window attending at least as many pairs."""
    sparse = patternc.parse(f"(global(0:{2 * a.pairs}) + window(left={a.window - 1}, right=0) + "
                            f"random({a.random}, block={a.random_block}, seed={a.seed})) & causal")
    pairs = lambda p: p.layout(a.seq_len).attended_pairs  # noqa: E731  (exact, from the block layout)
    window = lambda w: patternc.parse(f"window(left={w - 1}, right=0)")  # noqa: E731
    lo, hi, target = a.window, a.seq_len, pairs(sparse)
    while lo < hi:  # binary search on the width
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if pairs(window(mid)) < target else (lo, mid)
    pats = {"sparse": sparse, "window": window(lo)}
    return pats | {"causal": patternc.parse("causal")} if compare else pats


def describe(name, p, a):
    """Print the pattern's cost (its layout at the kernels' 64x64 tiles) and whether the queries
    can reach the pairs through the model's layers; return its density."""
    lay = p.layout(a.seq_len, a.seq_len, block_m=64, block_n=64)
    m = p.dense_mask(a.seq_len, device=a.device).float()
    reach = m[query_positions(a)]
    for _ in range(a.layers - 1):  # token i depends on token j after `layers` layers (residuals)
        reach = ((reach @ m) > 0).float()
    seen = reach[:, : 2 * a.pairs].amax(1).mean().item()
    print(f"pattern {name:7s} {p}")
    print(f"  density {100 * lay.density:.2f}% ({lay.attended_pairs:,} of {a.seq_len ** 2:,} query-key pairs), "
          f"64x64 tiles listed {100 * lay.block_density:.1f}%; queries that can reach the pairs in {a.layers} "
          f"layers: {100 * seen:.0f}%", flush=True)
    return lay.density


def evaluate(model, data, at, a):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad(), torch.autocast(a.device, torch.bfloat16, enabled=a.bf16):
        for i in range(0, len(data), a.batch):
            logits, t = model(data[i:i + a.batch, :-1], at).float(), data[i:i + a.batch, at + 1]
            loss += F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="sum").item()
            correct += (logits.argmax(-1) == t).sum().item()
    model.train()
    n = len(data) * len(at)
    return loss / n, correct / n


def train(name, pattern, kind, density, a):
    """Train one configuration from the same seeds; print progress and a summary line; return it."""
    torch.manual_seed(a.seed)  # the same initial weights and data for every configuration
    model = TinyLM(a, make_attend(kind, pattern, a)).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1, betas=(0.9, 0.98))
    warm = max(1, a.steps // 20)  # linear warmup, then cosine decay to 10%
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / a.steps))))
    gen = torch.Generator(a.device).manual_seed(a.seed)
    eval_data = make_batch(a.eval_size, a, torch.Generator(a.device).manual_seed(a.seed + 1))
    at = query_positions(a)
    timed_tokens, timed_s, losses, first_loss = 0, 0.0, [], None
    print(f"train   {name} attn={kind} steps={a.steps} batch={a.batch} seq_len={a.seq_len} "
          f"params={sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)
    for step in range(1, a.steps + 1):
        if a.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = make_batch(a.batch, a, gen)
        with torch.autocast(a.device, torch.bfloat16, enabled=a.bf16):
            logits = model(x[:, :-1], at)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, at + 1].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if a.device == "cuda":
            torch.cuda.synchronize()
        if step > warm:  # the first steps compile kernels (and warm caches): not timed
            timed_tokens, timed_s = timed_tokens + x[:, :-1].numel(), timed_s + time.perf_counter() - t0
        losses.append(loss.item())
        first_loss = losses[0] if first_loss is None else first_loss
        if step % a.log_every == 0 or step == a.steps:
            eval_loss, acc = evaluate(model, eval_data, at, a)
            tps = f"{timed_tokens / timed_s:,.0f}" if timed_s else "-"
            print(f"step {step:5d}  train loss {sum(losses) / len(losses):.3f}  eval loss {eval_loss:.3f}  "
                  f"eval acc {100 * acc:5.1f}%  tokens/s {tps}", flush=True)
            last_train, losses = sum(losses) / len(losses), []
    tps = timed_tokens / timed_s if timed_s else float("nan")
    print(f"summary pattern={name} attn={kind} density={100 * density:.2f}% steps={a.steps} "
          f"first_loss={first_loss:.3f} train_loss={last_train:.3f} eval_loss={eval_loss:.3f} "
          f"eval_acc={100 * acc:.1f}% (chance {100 / N_VALUES:.1f}%) tokens/s={tps:,.0f}", flush=True)
    return dict(name=name, attn=kind, density=density, first_loss=first_loss, train_loss=last_train,
                eval_loss=eval_loss, acc=acc, tps=tps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--attn", default="patternc", choices=["patternc", "sdpa", "flex"])
    ap.add_argument("--patterns", default="sparse,window", help="comma-separated, of: sparse, window")
    ap.add_argument("--compare", action="store_true", help="sparse with patternc, sdpa and flex; window with "
                    "patternc; dense causal with SDPA is_causal (speed reference)")
    for k in PRESETS["cpu"]:
        ap.add_argument("--" + k.replace("_", "-"), type=int, help="default: per device (PRESETS)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--no-rope", dest="rope", action="store_false", help="learned absolute positions instead")
    ap.add_argument("--no-token-shift", dest="token_shift", action="store_false",
                    help="no previous-token embedding (recall then needs an induction head: many more steps)")
    ap.add_argument("--eval-size", type=int, default=256)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    a = ap.parse_args(argv)
    for k, v in PRESETS[a.device].items():
        setattr(a, k, v if getattr(a, k) is None else getattr(a, k))
    if a.pairs > N_KEYS or 4 * a.pairs >= a.seq_len:
        ap.error(f"--pairs must be <= {N_KEYS} and leave room: 4 * pairs < seq_len")
    if a.device == "cpu" and a.attn == "flex" and not a.compare:
        ap.error("--attn flex needs --device cuda (FlexAttention has no backward on the CPU)")
    a.bf16 = a.device == "cuda"  # bf16 autocast on the GPU, fp32 on the CPU
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    pats = patterns(a, a.compare)
    density = {name: describe(name, p, a) for name, p in pats.items()}
    print(f"task    {a.pairs} key-value pairs at tokens 0..{2 * a.pairs - 1}, queried in the last {2 * a.pairs} "
          f"(>= {a.seq_len - 4 * a.pairs + 1} tokens after the pairs); {a.layers} layers, d_model={a.d_model}, "
          f"heads={a.heads}, {'RoPE' if a.rope else 'learned positions'}, "
          f"token shift {'on' if a.token_shift else 'off'}, {'bf16 autocast' if a.bf16 else 'fp32'}, "
          f"device={a.device}", flush=True)
    runs = ([("sparse", "patternc"), ("window", "patternc"), ("sparse", "sdpa"), ("sparse", "flex"),
             ("causal", "sdpa-causal")] if a.compare else [(n, a.attn) for n in a.patterns.split(",")])
    if a.device == "cpu" and ("sparse", "flex") in runs:  # flex_attention has no backward on the CPU
        print("flex    skipped: FlexAttention has no backward on the CPU", flush=True)
        runs.remove(("sparse", "flex"))
    results = [train(name, pats[name], kind, density[name], a) for name, kind in runs]
    print("results")
    for r in results:
        print(f"  {r['name']:7s} {r['attn']:12s} density {100 * r['density']:6.2f}%  loss {r['first_loss']:.3f} -> "
              f"{r['train_loss']:.3f}  eval acc {100 * r['acc']:5.1f}%  tokens/s {r['tps']:,.0f}")
    by = {(r["name"], r["attn"]): r for r in results}
    if ("sparse", "patternc") in by and ("window", "patternc") in by:
        s, w = by["sparse", "patternc"], by["window", "patternc"]
        print(f"accuracy: sparse {100 * s['acc']:.1f}% vs window {100 * w['acc']:.1f}% (chance {100 / N_VALUES:.1f}%) "
              f"at densities {100 * s['density']:.2f}% vs {100 * w['density']:.2f}%")
    if a.compare:
        base = by["sparse", "patternc"]["tps"]
        causal = by["causal", "sdpa-causal"]["tps"]
        print("tokens/s, sparse pattern: " + ", ".join(
            f"{k} {by['sparse', k]['tps']:,.0f} ({by['sparse', k]['tps'] / base:.2f}x)"
            for k in ("patternc", "sdpa", "flex") if ("sparse", k) in by)
            + f"; dense causal SDPA {causal:,.0f} ({causal / base:.2f}x)")
    return results


if __name__ == "__main__":
    main()
