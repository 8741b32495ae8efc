"""TransformerANN: a small decoder-only byte-level transformer with an exit after every layer.

Beyond the paper (issue 20): AdaLoss on an early-exit language model. The layout is nanoGPT's
(karpathy/nanoGPT model.py): learned token and position embeddings, pre-norm blocks
x + attn(LN(x)), x + MLP(LN(x)) with a 4x GELU MLP, causal attention through
`F.scaled_dot_product_attention`, bias-free linear layers, GPT-2's initialisation (normal 0.02, the
residual projections scaled by 1/sqrt(2 layers)).

Exits. Exit k reads the residual stream after block k. By default every exit goes through the same
final LayerNorm and the same LM head, tied to the token embedding, as LayerSkip (Elhoushi et al.
2024) and torchtune's early-exit recipe do, so an exit adds no parameters; `shared_head=False` gives
each exit its own LayerNorm and untied linear head instead (the CNN families' layout).

The model registry's data arguments read for text: `in_channels` must be 1 (one byte stream),
`num_classes` is the vocabulary (256 for bytes), and `image_size` is the input's size, here the
context length T in tokens (the position table's rows): `build_model("transformer", 1, 256, T)`.
`forward(idx, upto=k)` takes token ids (B, T') with T' <= T and returns the logits (B, T', vocab) of
exits 0..k, cheapest first (`AnytimeNet.forward`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AnytimeNet, check_positive

__all__ = ["TransformerANN", "Block", "CausalSelfAttention", "TokenEmbedding", "LMHead"]

INIT_STD = 0.02  # GPT-2's weight init (nanoGPT model.py _init_weights)
MLP_RATIO = 4  # hidden width of the MLP over the model width, as GPT-2


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused q, k, v projection, then an output projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
                   for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, MLP_RATIO * width, bias=False), nn.GELU(),
                                 nn.Linear(MLP_RATIO * width, width, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class TokenEmbedding(nn.Module):
    """Token plus learned position embedding: ids (B, T) -> (B, T, C), for T up to `context`."""

    def __init__(self, vocab: int, width: int, context: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(f"the transformer takes token ids as an int64 (B, T) tensor, got {idx.dtype} "
                             f"of shape {tuple(idx.shape)}")
        context = self.position.num_embeddings
        if idx.shape[1] > context:
            raise ValueError(f"an input of {idx.shape[1]} tokens is longer than the context of {context}")
        positions = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        return self.token(idx) + self.position(positions)  # (B, T, C)


class LMHead(nn.Module):
    """LayerNorm then a bias-free linear map to the vocabulary: (B, T, C) -> (B, T, vocab). With
    shared heads every exit holds one of these around the *same* norm and linear, so that each
    exit is still a module of its own (`AnytimeNet.heads`, the FLOP counter's hooks)."""

    def __init__(self, norm: nn.LayerNorm, linear: nn.Linear) -> None:
        super().__init__()
        self.norm, self.linear = norm, linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


class TransformerANN(AnytimeNet):
    """Decoder-only transformer with an exit after each of its `layers` blocks (module docstring).

    Options: layers (blocks = exits, default 12), width (model width, default 128), heads (attention
    heads, must divide width, default 4), shared_head (one final norm and a head tied to the token
    embedding for all exits, default True; False: a norm and an untied head per exit).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        layers: int = 12,
        width: int = 128,
        heads: int = 4,
        shared_head: bool = True,
    ) -> None:
        check_positive(num_classes=num_classes, image_size=image_size, layers=layers, width=width, heads=heads)
        if in_channels != 1:
            raise ValueError(f"the transformer reads one byte stream: in_channels must be 1, got {in_channels}")
        if width % heads:
            raise ValueError(f"heads ({heads}) must divide width ({width})")
        embedding = TokenEmbedding(num_classes, width, image_size)
        if shared_head:
            norm, linear = nn.LayerNorm(width), nn.Linear(width, num_classes, bias=False)
            linear.weight = embedding.token.weight  # tied (vocab, C), as GPT-2 and LayerSkip

            def make_head(channels: int) -> nn.Module:
                return LMHead(norm, linear)
        else:
            def make_head(channels: int) -> nn.Module:
                return LMHead(nn.LayerNorm(channels), nn.Linear(channels, num_classes, bias=False))

        super().__init__(
            stem=embedding,
            units=[Block(width, heads) for _ in range(layers)],
            unit_channels=[width] * layers,
            make_head=make_head,
            s=1,
            input_shape=(image_size,),
        )
        self.vocab, self.shared_head = num_classes, shared_head
        self._init_gpt2(layers)

    def _init_gpt2(self, layers: int) -> None:
        """GPT-2's initialisation in place of the CNNs' He init that `AnytimeNet` applied: normal(0,
        0.02) linear and embedding weights, LayerNorm at (1, 0), and the projections that write into
        the residual stream scaled by 1/sqrt(2 layers) so its variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        for block in self.units:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, mean=0.0, std=INIT_STD / math.sqrt(2 * layers))

    def example_input(self, batch_size: int, shape: Sequence[int] | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """Random token ids (B, T), T the context unless `shape` = (T,) says otherwise."""
        (length,) = self.input_shape if shape is None else tuple(shape)
        device = next(self.parameters()).device
        return torch.randint(0, self.vocab, (batch_size, length), device=device, generator=generator)
