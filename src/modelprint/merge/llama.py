"""A functional Llama forward pass over plain state dicts, layer by layer.

PLeaS needs every linear layer's input and output, for several models at once, one decoder
layer at a time. Running the block from weight tensors (instead of hooking ``nn.Module``s)
keeps that simple: the same function runs a parent, a permuted parent, or the half-merged
model, including one whose MLP is wider. ``tests/test_merge.py`` checks it equals transformers.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from modelprint.errors import ModelprintError

State = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]
    tied: bool

    @classmethod
    def of(cls, model: torch.nn.Module) -> "LlamaShape":
        from transformers.activations import ACT2FN

        c = model.config
        if c.model_type != "llama" or getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
            raise ModelprintError(f"merge method 'pleas' supports Llama-architecture models without biases, "
                                  f"not '{c.model_type}'")
        return cls(hidden=c.hidden_size, intermediate=c.intermediate_size, layers=c.num_hidden_layers,
                   heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                   head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                   eps=c.rms_norm_eps, act=ACT2FN[c.hidden_act], tied=bool(c.tie_word_embeddings))


def key(layer: int, name: str) -> str:
    """State-dict name of a decoder-layer weight, e.g. ``key(3, "mlp.down_proj")``."""
    return f"model.layers.{layer}.{name}.weight"


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for positions 0..T-1 from the model's own rotary module (honours rope scaling)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    dummy = torch.zeros(1, device=tokens.device, dtype=torch.float32)
    return model.model.rotary_emb(dummy, positions)


def block(sd: State, layer: int, h: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor],
          s: LlamaShape) -> dict[str, torch.Tensor]:
    """One decoder layer on residual input ``h`` (B, T, hidden); returns every intermediate by name.

    Keys: ``attn_in`` (input of q/k/v), ``q``, ``k``, ``v``, ``attn_out`` (input of o_proj), ``o``,
    ``mlp_in`` (input of gate/up), ``gate``, ``up``, ``act`` (input of down_proj), ``down``, ``out``.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    B, T, _ = h.shape
    r: dict[str, torch.Tensor] = {}
    r["attn_in"] = x = rms_norm(h, sd[key(layer, "input_layernorm")], s.eps)
    r["q"], r["k"], r["v"] = (x @ sd[key(layer, f"self_attn.{n}_proj")].T for n in "qkv")
    q = r["q"].view(B, T, s.heads, s.head_dim).transpose(1, 2)
    k = r["k"].view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
    v = r["v"].view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *cos_sin)
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    r["attn_out"] = att.transpose(1, 2).reshape(B, T, s.heads * s.head_dim)
    r["o"] = r["attn_out"] @ sd[key(layer, "self_attn.o_proj")].T
    mid = h + r["o"]
    r["mlp_in"] = y = rms_norm(mid, sd[key(layer, "post_attention_layernorm")], s.eps)
    r["gate"], r["up"] = y @ sd[key(layer, "mlp.gate_proj")].T, y @ sd[key(layer, "mlp.up_proj")].T
    r["act"] = s.act(r["gate"]) * r["up"]
    r["down"] = r["act"] @ sd[key(layer, "mlp.down_proj")].T
    r["out"] = mid + r["down"]
    return r


def embed(sd: State, tokens: torch.Tensor) -> torch.Tensor:
    return sd["model.embed_tokens.weight"][tokens]


def head_weight(sd: State, tied: bool) -> torch.Tensor:
    return sd["model.embed_tokens.weight"] if tied or "lm_head.weight" not in sd else sd["lm_head.weight"]


def logits(sd: State, h: torch.Tensor, s: LlamaShape) -> torch.Tensor:
    """Final norm and LM head on the last residual state."""
    return rms_norm(h, sd["model.norm.weight"], s.eps) @ head_weight(sd, s.tied).T
