#!/usr/bin/env python3
"""Token generation with a KV cache: the inference workload for memtrace.

A small GPT-style decoder with random weights (deterministic given --seed)
reads a prompt of --prompt-len tokens in one forward pass, then generates
--tokens tokens one at a time, greedily. Each layer keeps its keys and
values of the tokens seen so far (the KV cache, shape (batch, heads,
tokens, head_dim)); each generated token appends its key and value with
torch.cat, which allocates the layer's new cache and frees the old one, so
the cache grows by one token per step and its allocations are a chain of
ever larger blocks. Works with PyTorch 1.13 and 2.x, on the CPU by default
(--device cuda optional). Uses nothing outside PyTorch and the standard
library (and memtrace's Python API when it is there).

How memtrace knows which allocations are the KV cache: every tensor that
holds cache data (keys, values, and for the compressed caches their codes,
scales and zero points, or latents) is tagged `kv_cache` through memtrace's
Python API (python/memtrace, found relative to this file) as soon as it is
made; `memtrace report` then counts those blocks under the category
kv_cache and `memtrace simulate --kv-*` transforms them. Without memtrace
(or without that directory) the tag calls do nothing.

Switches that really change what the cache stores, to compare a re-run
with `memtrace simulate`'s prediction from the plain run's trace:
    --kv-window T   sliding-window attention: after each token the cache is
                    cut to the last T tokens (a new block of exactly T
                    tokens; the old one is freed), and attention sees only
                    those.
    --kv-bits B     the cache is stored with B bits per value: 16 is fp16;
                    8 and 4 are integer codes (4-bit codes two to a byte)
                    with an fp16 scale and an fp16 zero point per group of
                    32 values along head_dim (b + 32/32 bits per value).
                    Attention dequantizes one layer's keys and values to
                    fp32 for the step: a transient the size of that
                    layer's plain cache, as in any implementation that
                    does not fuse dequantization into attention.
    --kv-latent R   keys and values are stored as latents of rank
                    d_model / R each, made by fixed random projections with
                    orthonormal columns (R times fewer bytes than the
                    plain cache); attention up-projects one layer's latents
                    for the step: a transient the size of that layer's
                    plain cache. Lossy, which is fine for random weights:
                    the point is the memory.

Output (one line each):
    params N param_bytes B
    token I id X cache_tokens T          for I = 1..tokens
    kv_cache_bytes B                     bytes the cache holds at the end
                                         (all layers, keys and values,
                                         codes, scales, zero points)
"""

import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# memtrace's Python API, from this source tree (../python); its calls do
# nothing when memtrace is not loaded in this process, and without the
# directory (the example copied elsewhere) the cache is simply not tagged.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
try:
    import memtrace
except ImportError:
    memtrace = None
del sys.path[0]

GROUP = 32
"""Values per scale and zero point of the quantized caches."""


def tag_kv(t):
    """Tags t's storage as kv_cache for memtrace (nothing without it)."""
    if memtrace is None or not memtrace.loaded:
        return t
    storage = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    if t.is_cuda:
        memtrace.tag_gpu(storage.data_ptr(), "kv_cache")
    else:
        memtrace.tag(storage.data_ptr(), "kv_cache")
    return t


class Store:
    """How one layer's keys or values are stored: encode(x) -> parts, decode(parts)."""

    def __init__(self, bits, latent, head_dim, d_model, heads, device, gen):
        self.bits, self.latent, self.heads = bits, latent, heads
        self.proj = None
        if latent:
            # One projection for all heads: (d_model, rank), orthonormal
            # columns, so proj.T up-projects.
            rank = d_model // latent
            a = torch.randn(d_model, rank, generator=gen)
            self.proj = torch.linalg.qr(a)[0].to(device) if hasattr(torch, "linalg") else \
                torch.qr(a)[0].to(device)

    def encode(self, x):
        """x: (b, heads, t, head_dim) fp32 -> tuple of stored tensors."""
        if self.proj is not None:
            b, h, t, hd = x.shape
            flat = x.transpose(1, 2).reshape(b, t, h * hd)
            return (flat @ self.proj,)
        if self.bits == 16:
            return (x.to(torch.float16),)
        if self.bits in (8, 4):
            b, h, t, hd = x.shape
            g = x.reshape(b, h, t, hd // GROUP, GROUP)
            lo = g.amin(dim=-1, keepdim=True)
            hi = g.amax(dim=-1, keepdim=True)
            levels = (1 << self.bits) - 1
            scale = ((hi - lo) / levels).clamp_min(1e-8)
            codes = torch.round((g - lo) / scale).clamp_(0, levels).to(torch.uint8)
            codes = codes.reshape(b, h, t, hd)
            if self.bits == 4:
                codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
            return (codes, scale.squeeze(-1).to(torch.float16), lo.squeeze(-1).to(torch.float16))
        return (x,)

    def decode(self, parts):
        """Stored tensors -> (b, heads, t, head_dim) fp32."""
        if self.proj is not None:
            lat = parts[0]
            b, t, _ = lat.shape
            return (lat @ self.proj.t()).view(b, t, self.heads, -1).transpose(1, 2)
        # In place where it can be: the fp32 result is the only transient
        # of the cache's size (plus the unpacked 4-bit codes, one byte each).
        if self.bits == 16:
            return parts[0].float()
        if self.bits in (8, 4):
            codes, scale, zero = parts
            if self.bits == 4:
                codes = torch.stack((codes & 15, codes >> 4), dim=-1).flatten(-2)
            b, h, t, hd = codes.shape
            g = codes.float().view(b, h, t, hd // GROUP, GROUP)
            del codes
            g.mul_(scale.unsqueeze(-1)).add_(zero.unsqueeze(-1))
            return g.view(b, h, t, hd)
        return parts[0]

    @staticmethod
    def time_dim(part):
        """The token axis of a stored tensor: 1 for latents, 2 otherwise."""
        return 1 if part.dim() == 3 else 2


def append(parts, new, window):
    """The cache parts with new's tokens appended, cut to the last window.

    One torch.cat per part makes the new block (of at most window tokens);
    the old one is freed when the caller drops it."""
    out = []
    for old, add in zip(parts, new):
        if old is None:
            cat = add
        else:
            d = Store.time_dim(old)
            if window and old.shape[d] + add.shape[d] > window:
                keep = window - add.shape[d]
                old = old.narrow(d, old.shape[d] - keep, keep) if keep > 0 else None
            cat = torch.cat([old, add], dim=d) if old is not None else add
        if window and cat.shape[Store.time_dim(cat)] > window:
            d = Store.time_dim(cat)
            cat = cat.narrow(d, cat.shape[d] - window, window).clone()
        out.append(tag_kv(cat.contiguous()))
    return tuple(out)


class Block(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x, caches, layer, store, window):
        """x: (b, t, d_model) new tokens; caches[layer]: (k_parts, v_parts)
        or None (the prompt), replaced by the layer's new cache.

        The old cache is dropped from caches as soon as it is read, so it is
        freed once the new one is made, not at the end of the layer."""
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        old = caches[layer]
        caches[layer] = None
        old_k, old_v = old if old is not None else ((None,) * 3, (None,) * 3)
        del old
        k_parts = append(old_k, store.encode(k), window)
        del old_k
        v_parts = append(old_v, store.encode(v), window)
        del old_v
        caches[layer] = (k_parts, v_parts)
        if t > 1:
            # The prompt attends to its own exact keys and values: causal,
            # and within the window when there is one.
            keys, values = k, v
            i = torch.arange(t, device=x.device).view(t, 1)
            j = torch.arange(t, device=x.device).view(1, t)
            mask = (j <= i) & (j > i - (window or t))
        else:
            keys, values = store.decode(k_parts), store.decode(v_parts)
            mask = None
        att = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        y = F.softmax(att, dim=-1) @ values
        del keys, values, att
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x


class Decoder(nn.Module):
    def __init__(self, vocab, positions, layers, d_model, heads):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(positions, d_model)
        self.blocks = nn.ModuleList([Block(d_model, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, start, caches, store, window):
        b, t = idx.shape
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for i, block in enumerate(self.blocks):
            x = block(x, caches, i, store, window)
        return self.head(self.ln_f(x[:, -1]))


def cache_bytes(caches):
    return sum(p.numel() * p.element_size()
               for c in caches if c is not None for parts in c for p in parts)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Generate tokens with a KV cache (random weights).")
    p.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt tokens (default 16)")
    p.add_argument("--batch", type=int, default=2, help="sequences at once (default 2)")
    p.add_argument("--layers", type=int, default=4, help="decoder blocks (default 4)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--d-model", type=int, default=128, help="model width (default 128)")
    p.add_argument("--vocab", type=int, default=256, help="vocabulary size (default 256)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads value (default 2; 0 keeps torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--kv-window", type=int, default=0, metavar="T",
                   help="keep only the last T tokens in the cache (sliding-window attention)")
    p.add_argument("--kv-bits", type=int, choices=(16, 8, 4), default=0,
                   help="store the cache as fp16 (16) or int codes with scale/zero per 32 (8, 4)")
    p.add_argument("--kv-latent", type=int, default=0, metavar="R",
                   help="store keys and values as latents of rank d_model/R")
    a = p.parse_args(argv)
    for name in ("tokens", "prompt_len", "batch", "layers", "heads", "d_model", "vocab"):
        if getattr(a, name) < 1:
            p.error("--%s must be at least 1" % name.replace("_", "-"))
    if a.d_model % a.heads != 0:
        p.error("--d-model must be a multiple of --heads")
    if a.kv_bits in (8, 4) and (a.d_model // a.heads) % GROUP != 0:
        p.error("--kv-bits 8/4 needs d_model/heads to be a multiple of %d" % GROUP)
    if a.kv_window < 0:
        p.error("--kv-window must not be negative")
    if a.kv_latent < 0 or (a.kv_latent and a.d_model % a.kv_latent != 0):
        p.error("--kv-latent must divide --d-model")
    if a.kv_latent and a.kv_bits:
        p.error("--kv-latent and --kv-bits do not combine")
    if a.threads < 0:
        p.error("--threads must be 0 or more")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("generate.py: CUDA is not available", file=sys.stderr)
        return 2
    torch.manual_seed(a.seed)
    model = Decoder(a.vocab, a.prompt_len + a.tokens, a.layers, a.d_model, a.heads).to(device)
    model.eval()
    gen = torch.Generator()
    gen.manual_seed(a.seed + 1)
    store = Store(a.kv_bits, a.kv_latent, a.d_model // a.heads, a.d_model, a.heads, device, gen)
    prompt = torch.randint(0, a.vocab, (a.batch, a.prompt_len), generator=gen).to(device)
    params = sum(p.numel() for p in model.parameters())
    print("params %d param_bytes %d" % (params, sum(p.numel() * p.element_size()
                                                     for p in model.parameters())))
    caches = [None] * a.layers
    with torch.no_grad():
        logits = model(prompt, 0, caches, store, a.kv_window)
        pos = a.prompt_len
        for i in range(1, a.tokens + 1):
            nxt = logits.argmax(dim=-1, keepdim=True)
            n = caches[0][0][0].shape[Store.time_dim(caches[0][0][0])]
            print("token %d id %d cache_tokens %d" % (i, int(nxt[0, 0]), n), flush=True)
            if i == a.tokens:
                break
            logits = model(nxt, pos, caches, store, a.kv_window)
            pos += 1
    print("kv_cache_bytes %d" % cache_bytes(caches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
