#!/usr/bin/python3
"""The Llama-family reference of make.py once more, in numpy float64 only (Debian's python3-numpy, which python3-pandas
brings; python3-torch is 460 packages, too many for CI). Same formulas, same conventions as make.py's `forward`, which
follows Hugging Face's modeling_llama.py and modeling_qwen2.py: RMSNorm g · x / sqrt(mean(x²) + eps); rotary positions
in the rotate-half convention (dimension j < h/2 pairs with j + h/2, angle p · θ^(−2j/h)); grouped-query causal
attention, query head j reading key/value head j // (heads / kv_heads), scores / sqrt(h), an explicit causal mask;
SwiGLU down(silu(gate(x)) · up(x)); Qwen2's q/k/v biases; lm_head tied to the embedding or not. The safetensors file is
parsed here (a u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, raw little-endian
data): no `safetensors` module.

  /usr/bin/python3 reference_np.py FOLDER IDS OUT
      FOLDER holds config.json and model.safetensors (Hugging Face's names, F32/F64/F16/BF16); IDS is a safetensors file
      with `input_ids` [B, T] (I64); OUT gets `logits` [B, T, V] as F64, computed from the weights widened to float64.
  /usr/bin/python3 reference_np.py --compare FOLDER EXPECTED
      computes the logits on EXPECTED's input_ids and prints max |logits − EXPECTED's logits| and max |EXPECTED's logits|.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        data = raw[8 + n + a:8 + n + b]
        if e["dtype"] == "BF16":
            # bfloat16 is the upper half of a float32: widen by shifting its 16 bits up.
            bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(data, dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        out[name] = array.reshape(e["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "np"}}, [], 0
    names = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def rms_norm(x, g, eps):
    return g * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))


def rotate(x, cos, sin):
    """rotate_half([x1, x2]) = [−x2, x1] (Hugging Face's convention)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + np.concatenate([-x2, x1], axis=-1) * sin


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))  # exp(−inf) = 0 on the masked scores
    return e / e.sum(-1, keepdims=True)


def forward(c, weights, ids):
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    d, h, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or d // h
    eps = c["rms_norm_eps"]
    b, t = ids.shape
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    tied = c.get("tie_word_embeddings", False)  # LlamaConfig's and Qwen2Config's default
    inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    angles = np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]
    both = np.concatenate([angles, angles], -1)
    cos, sin = np.cos(both), np.sin(both)
    future = np.triu(np.ones((t, t), dtype=bool), k=1)
    x = w["model.embed_tokens.weight"][ids]  # [B, T, d]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def proj(name, heads):
            y = a @ w[p + f"self_attn.{name}.weight"].T  # torch Linear's weight is [out, in]
            if qkv_bias:
                y = y + w[p + f"self_attn.{name}.bias"]
            return y.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)  # [B, heads, T, hd]

        q, k, v = rotate(proj("q_proj", h), cos, sin), rotate(proj("k_proj", kv), cos, sin), proj("v_proj", kv)
        outs = []
        for j in range(h):
            g = j // (h // kv)
            scores = (q[:, j] @ k[:, g].transpose(0, 2, 1)) / np.sqrt(hd)
            scores = np.where(future, -np.inf, scores)
            outs.append(softmax(scores) @ v[:, g])
        att = np.stack(outs, axis=2).reshape(b, t, h * hd)
        x = x + att @ w[p + "self_attn.o_proj.weight"].T
        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        silu = gate / (1.0 + np.exp(-gate))
        x = x + (silu * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return x @ head.T


def logits_of(folder, ids):
    with open(f"{folder}/config.json") as f:
        c = json.load(f)
    return forward(c, read_safetensors(f"{folder}/model.safetensors"), ids)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        expected = read_safetensors(sys.argv[3])
        ref = expected["logits"]
        error = np.abs(logits_of(sys.argv[2], expected["input_ids"]) - ref).max()
        print(f"{error!r} {np.abs(ref).max()!r}")
    elif len(sys.argv) == 4:
        ids = read_safetensors(sys.argv[2])["input_ids"]
        write_safetensors(sys.argv[3], {"logits": logits_of(sys.argv[1], ids)})
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
