"""A BERT encoder in plain torch: the forward pass of transformers' BertModel (absolute
positions, eager attention, erf GELU, no pooler), written out so that the embedded MiniLM
needs no transformers and stays what coremltools 9.0's torch frontend converts as it is.

Module and parameter names are BertModel's (embeddings.word_embeddings.weight,
encoder.layer.N.attention.self.query.weight, ...): a checkpoint's tensors load by name, and a
converted const maps back to its parameter by coremltools' naming rule (minilm.param_name,
plan.quality.param_for_const). The order of every addition is BertModel's too, so that the
float results agree with it to rounding (tests/test_minilm.py: 1e-5 per embedding element).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class BertShape:
    """The hyper-parameters that fix every tensor's shape."""

    vocab: int
    positions: int
    token_types: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    layer_norm_eps: float


class Embeddings(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab, s.hidden)
        self.position_embeddings = nn.Embedding(s.positions, s.hidden)
        self.token_type_embeddings = nn.Embedding(s.token_types, s.hidden)
        self.LayerNorm = nn.LayerNorm(s.hidden, eps=s.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, position_ids):
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(position_ids))


class SelfAttention(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.heads, self.head_dim = s.heads, s.hidden // s.heads
        self.query = nn.Linear(s.hidden, s.hidden)
        self.key = nn.Linear(s.hidden, s.hidden)
        self.value = nn.Linear(s.hidden, s.hidden)

    def _split(self, x):  # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, mask_bias: Optional[torch.Tensor]):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.head_dim ** -0.5
        if mask_bias is not None:
            scores = scores + mask_bias
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        return context.transpose(1, 2).reshape(x.shape)


class Residual(nn.Module):
    """dense, then LayerNorm of the sum with the block's input (BertSelfOutput / BertOutput)."""

    def __init__(self, s: BertShape, width: int):
        super().__init__()
        self.dense = nn.Linear(width, s.hidden)
        self.LayerNorm = nn.LayerNorm(s.hidden, eps=s.layer_norm_eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.self = SelfAttention(s)
        self.output = Residual(s, s.hidden)

    def forward(self, x, mask_bias=None):
        return self.output(self.self(x, mask_bias), x)


class Intermediate(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.dense = nn.Linear(s.hidden, s.intermediate)

    def forward(self, x):
        return F.gelu(self.dense(x))  # the exact (erf) GELU, BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.attention = Attention(s)
        self.intermediate = Intermediate(s)
        self.output = Residual(s, s.intermediate)

    def forward(self, x, mask_bias=None):
        attended = self.attention(x, mask_bias)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.layer = nn.ModuleList(Layer(s) for _ in range(s.layers))

    def forward(self, x, mask_bias=None):
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


class Bert(nn.Module):
    """forward(input_ids, token_type_ids=None, attention_mask=None, position_ids=None) -> the
    last hidden state (batch, seq, hidden). Without a mask every position attends to every
    other (what the converted Core ML program does); with one, padded positions get the
    lowest float added to their scores, so softmax gives them exactly zero weight."""

    def __init__(self, shape: BertShape):
        super().__init__()
        self.shape = shape
        self.embeddings = Embeddings(shape)
        self.encoder = Encoder(shape)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask_bias = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].to(x.dtype)
            mask_bias = (1.0 - keep) * torch.finfo(x.dtype).min
        return self.encoder(x, mask_bias)


def load(shape: BertShape, tensors: Dict[str, torch.Tensor], source: str) -> Bert:
    """A Bert in eval mode carrying `tensors` (by parameter name; extra tensors such as a pooler
    are ignored). A missing tensor, or one of another shape, is a CheckpointError naming it."""
    from .errors import CheckpointError

    model = Bert(shape)
    state = {}
    for name, param in model.named_parameters():
        if name not in tensors:
            raise CheckpointError(f"{source}: tensor '{name}' is missing "
                                  f"(the encoder needs shape {tuple(param.shape)})")
        t = tensors[name]
        if tuple(t.shape) != tuple(param.shape) or not t.is_floating_point():
            raise CheckpointError(f"{source}: tensor '{name}' is {str(t.dtype).replace('torch.', '')} "
                                  f"{tuple(t.shape)}, the encoder needs float {tuple(param.shape)}")
        state[name] = t.float()
    model.load_state_dict(state)
    return model.eval()
