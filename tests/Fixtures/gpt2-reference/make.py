#!/usr/bin/python3
"""Reference fixture for the GPT model (tests "research.gpt"): a small random GPT-2, written in Hugging Face's layout,
and its float64 logits on fixed token ids, computed here from the formulas of Radford et al. 2019 and Hugging Face's
modeling_gpt2.py — independently of the C# model (no shared code, no fused attention, explicit mask and GELU).

Run from this folder with Debian's python3-torch (1.13): `/usr/bin/python3 make.py`. It writes
  model.safetensors    the weights, float32, keys transformer.*, Conv1D weights [in, out], plus the tied lm_head.weight
                       (equal to wte) and the per-block attn.bias / attn.masked_bias buffers old transformers saved;
  expected.safetensors input_ids [B, T] int64 and logits [B, T, V] float64 (the float32 weights, widened).
Deterministic (torch.manual_seed); the safetensors files are written by hand (the `safetensors` module is not needed).
"""
import json
import math
import struct

import torch

V, T_MAX, D, H, L, EPS = 300, 32, 64, 4, 2, 1e-5
B = 2

torch.manual_seed(20260113)


def conv1d_weight(n_in, n_out, std):
    return torch.randn(n_in, n_out) * std  # Conv1D: y = x @ W + b, W stored [in, out]


# Larger than GPT-2's 0.02 initialisation, and non-trivial LayerNorm gains and shifts, so that attention is peaked,
# GELU runs through its curved part and every parameter moves the logits: a wrong formula shows, not just a wrong scale.
weights = {
    "transformer.wte.weight": torch.randn(V, D) * 0.5,
    "transformer.wpe.weight": torch.randn(T_MAX, D) * 0.3,
}
for i in range(L):
    p = f"transformer.h.{i}."
    weights.update({
        p + "ln_1.weight": 1 + 0.2 * torch.randn(D), p + "ln_1.bias": 0.1 * torch.randn(D),
        p + "attn.c_attn.weight": conv1d_weight(D, 3 * D, 0.25), p + "attn.c_attn.bias": 0.1 * torch.randn(3 * D),
        p + "attn.c_proj.weight": conv1d_weight(D, D, 0.15), p + "attn.c_proj.bias": 0.1 * torch.randn(D),
        p + "ln_2.weight": 1 + 0.2 * torch.randn(D), p + "ln_2.bias": 0.1 * torch.randn(D),
        p + "mlp.c_fc.weight": conv1d_weight(D, 4 * D, 0.2), p + "mlp.c_fc.bias": 0.3 * torch.randn(4 * D),
        p + "mlp.c_proj.weight": conv1d_weight(4 * D, D, 0.1), p + "mlp.c_proj.bias": 0.1 * torch.randn(D),
    })
weights["transformer.ln_f.weight"] = 1 + 0.2 * torch.randn(D)
weights["transformer.ln_f.bias"] = 0.1 * torch.randn(D)
weights = {k: v.float().contiguous() for k, v in weights.items()}

input_ids = torch.randint(0, V, (B, T_MAX), dtype=torch.int64)


def layer_norm(x, g, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as torch.nn.LayerNorm
    return (x - mean) / torch.sqrt(var + EPS) * g + b


def gelu_tanh(x):  # GPT-2's "gelu_new"
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(ids):
    w = {k: v.double() for k, v in weights.items()}
    t = ids.shape[1]
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:t]
    hd = D // H
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(L):
        p = f"transformer.h.{i}."
        a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(D, dim=-1)
        heads = lambda z: z.view(z.shape[0], t, H, hd).transpose(1, 2)  # [B, H, T, hd]
        q, k, v = heads(q), heads(k), heads(v)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(~mask, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v
        att = att.transpose(1, 2).reshape(x.shape[0], t, D)
        x = x + att @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        x = x + gelu_tanh(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
    return x @ w["transformer.wte.weight"].T  # lm_head tied to wte


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.bool: "BOOL"}


def write_safetensors(path, tensors, metadata):
    """The format: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, raw data."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


logits = forward(input_ids)

stored = dict(weights)
stored["lm_head.weight"] = weights["transformer.wte.weight"].clone()
for i in range(L):
    stored[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(T_MAX, T_MAX)).view(1, 1, T_MAX, T_MAX)  # float32, as in the hub's gpt2 file
    stored[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)

config = {"vocab": V, "max_len": T_MAX, "width": D, "heads": H, "layers": L}
write_safetensors("model.safetensors", stored, {"format": "pt", "config": json.dumps(config)})
write_safetensors("expected.safetensors", {"input_ids": input_ids, "logits": logits}, {"format": "pt", "config": json.dumps(config)})
print(f"V={V} T_max={T_MAX} d={D} H={H} L={L}; logits {tuple(logits.shape)}, max |logit| {logits.abs().max().item():.4f}")
