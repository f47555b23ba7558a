#!/usr/bin/python3
"""Reference fixture for the Llama-family kind (tests "research.llama"): two small random checkpoints in Hugging Face's
layout and their float64 logits on fixed token ids, computed here from the formulas of Hugging Face's modeling_llama.py
and modeling_qwen2.py — independently of the C# model (no shared code, no fused attention: explicit causal mask,
explicit key/value head index, rotate-half written out, RMSNorm and SwiGLU from their definitions).

  llama/  a Llama variant: grouped-query attention (8 query heads over 2 key/value heads), untied lm_head, rope_theta 500
  qwen2/  a Qwen2 variant: q/k/v biases (none on o_proj), tied embeddings (no lm_head.weight in the file), 6 heads over 3

Each folder holds config.json (as transformers writes it), model.safetensors (float32, Hugging Face's names) and
expected.safetensors (input_ids [B, T] int64, logits [B, T, V] float64 from the float32 weights widened).

Run from this folder with Debian's python3-torch (1.13): `OPENBLAS_NUM_THREADS=1 /usr/bin/python3 make.py`. Deterministic
(torch.manual_seed); the safetensors files are written and read by hand (the `safetensors` module is not needed).

`/usr/bin/python3 make.py --check FOLDER VARIANT` reads a model folder another program wrote (config.json and
model.safetensors), computes its logits on VARIANT's ids with this reference and prints the largest difference from
VARIANT's expected logits: what `research`'s export is checked with.

reference_np.py beside it is this forward once more in numpy float64 (no torch), which the tests run: on these
checkpoints it gives these expected logits (tests "research.formats-fixtures").
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

VARIANTS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=300, hidden_size=64, intermediate_size=112,
                  num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500.0,
                  max_position_embeddings=32, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                  hidden_act="silu", torch_dtype="float32"),
    "qwen2": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=300, hidden_size=48, intermediate_size=80,
                  num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3, rms_norm_eps=1e-6, rope_theta=10000.0,
                  max_position_embeddings=32, tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
                  hidden_act="silu", torch_dtype="float32"),
}
B, T = 2, 32


def make_weights(c, qkv_bias):
    """Larger than the 0.02 initialisation, and RMSNorm gains away from 1, so that attention is peaked, silu runs
    through its curved part and every parameter moves the logits: a wrong formula shows, not just a wrong scale."""
    d, i_size, h = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv, hd = c["num_key_value_heads"], c["hidden_size"] // c["num_attention_heads"]
    w = {"model.embed_tokens.weight": torch.randn(c["vocab_size"], d) * 0.5}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = torch.randn(h * hd, d) * 0.25  # torch Linear: [out, in]
        w[p + "self_attn.k_proj.weight"] = torch.randn(kv * hd, d) * 0.25
        w[p + "self_attn.v_proj.weight"] = torch.randn(kv * hd, d) * 0.25
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = torch.randn(h * hd) * 0.2
            w[p + "self_attn.k_proj.bias"] = torch.randn(kv * hd) * 0.2
            w[p + "self_attn.v_proj.bias"] = torch.randn(kv * hd) * 0.2
        w[p + "self_attn.o_proj.weight"] = torch.randn(d, h * hd) * 0.15
        w[p + "mlp.gate_proj.weight"] = torch.randn(i_size, d) * 0.2
        w[p + "mlp.up_proj.weight"] = torch.randn(i_size, d) * 0.2
        w[p + "mlp.down_proj.weight"] = torch.randn(d, i_size) * 0.15
        w[p + "input_layernorm.weight"] = 1 + 0.2 * torch.randn(d)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.2 * torch.randn(d)
    w["model.norm.weight"] = 1 + 0.2 * torch.randn(d)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = torch.randn(c["vocab_size"], d) * 0.3
    return {k: v.float().contiguous() for k, v in w.items()}


def rms_norm(x, g, eps):
    return g * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rotate(x, cos, sin):
    """Hugging Face's convention: dimension j < h/2 pairs with j + h/2; rotate_half([x1, x2]) = [-x2, x1]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def forward(c, weights, ids):
    w = {k: v.double() for k, v in weights.items()}
    d, h, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or d // h
    eps, t = c["rms_norm_eps"], ids.shape[1]
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    # Angles p·θ^(−2j/h) for j < h/2, each used for the pair (j, j + h/2).
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.arange(t, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    x = w["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def proj(name, heads):
            y = a @ w[p + f"self_attn.{name}.weight"].T
            if qkv_bias:
                y = y + w[p + f"self_attn.{name}.bias"]
            return y.view(x.shape[0], t, heads, hd).transpose(1, 2)  # [B, heads, T, hd]

        q, k, v = rotate(proj("q_proj", h), cos, sin), rotate(proj("k_proj", kv), cos, sin), proj("v_proj", kv)
        outs = []
        for j in range(h):
            g = j // (h // kv)  # the key/value head query head j reads
            scores = (q[:, j] @ k[:, g].transpose(-1, -2)) / math.sqrt(hd)
            scores = scores.masked_fill(~mask, float("-inf"))
            outs.append(torch.softmax(scores, dim=-1) @ v[:, g])
        att = torch.stack(outs, dim=2).reshape(x.shape[0], t, h * hd)  # heads concatenated in order
        x = x + att @ w[p + "self_attn.o_proj.weight"].T
        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((gate * torch.sigmoid(gate)) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
NUMPY = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "BF16": None, "F16": np.float16}


def write_safetensors(path, tensors):
    """The format: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, raw data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
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


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype=NUMPY[e["dtype"]]).reshape(e["shape"]).copy())
    return out


def make():
    torch.manual_seed(20261207)
    for name, c in VARIANTS.items():
        os.makedirs(name, exist_ok=True)
        weights = make_weights(c, qkv_bias=name == "qwen2")
        ids = torch.randint(0, c["vocab_size"], (B, T), dtype=torch.int64)
        logits = forward(c, weights, ids)
        with open(os.path.join(name, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
            f.write("\n")
        write_safetensors(os.path.join(name, "model.safetensors"), weights)
        write_safetensors(os.path.join(name, "expected.safetensors"), {"input_ids": ids, "logits": logits})
        print(f"{name}: {sum(v.numel() for v in weights.values())} parameters in {len(weights)} tensors; "
              f"logits {tuple(logits.shape)}, max |logit| {logits.abs().max().item():.4f}")


def check(folder, variant):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    weights = read_safetensors(os.path.join(folder, "model.safetensors"))
    expected = read_safetensors(os.path.join(variant, "expected.safetensors"))
    logits = forward(c, weights, expected["input_ids"])
    error = (logits - expected["logits"]).abs().max().item()
    print(f"{folder}: {len(weights)} tensors, max |logits - {variant}'s expected| = {error:.3g} "
          f"(max |expected| {expected['logits'].abs().max().item():.4g})")
    return error


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2], sys.argv[3]) < 1e-4 else 1)
    make()
