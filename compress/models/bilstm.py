"""BiLSTM + additive attention student.

The backward direction is a second forward LSTM run over each sequence reversed *within its own
length* (a gather, no packed sequences): padding then only ever follows the real tokens in both
directions, so a text's output does not depend on its batch's padding, and the graph exports to
ONNX with dynamic batch and sequence axes. Attention pooling (Bahdanau-style ``v^T tanh(W h)``)
masks padding positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first ``lengths[b]`` steps of each row, leaving padding in place.

    Args:
        x: (B, T, D).
        lengths: (B,) long, real tokens per row.

    Returns:
        (B, T, D); applying it twice gives ``x`` back.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    lengths = lengths.unsqueeze(1)  # (B, 1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (B, T)
    return torch.gather(x, 1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


class BiLSTMAttention(nn.Module):
    """Multi-label BiLSTM with masked additive attention pooling.

    Args:
        num_labels: L outputs.
        vocab_size: rows of the embedding table (the tokenizer's vocabulary).
        embed_dim: E.
        hidden: H per direction (the pooled vector is 2H).
        attention_dim: A, width of the attention scorer.
        dropout: on embeddings and before the classifier.
        pad_id: padding token id.
    """

    def __init__(self, num_labels: int, vocab_size: int, embed_dim: int = 128, hidden: int = 128,
                 attention_dim: int = 128, dropout: float = 0.3, pad_id: int = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.forward_lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.attention = nn.Sequential(nn.Linear(2 * hidden, attention_dim), nn.Tanh(),
                                       nn.Linear(attention_dim, 1, bias=False))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Args: input_ids (B, T) long; attention_mask (B, T), 1 for real tokens. Returns: (B, L) logits."""
        lengths = attention_mask.long().sum(dim=1)  # (B,)
        x = self.dropout(self.embedding(input_ids))  # (B, T, E)
        fwd, _ = self.forward_lstm(x)  # (B, T, H)
        bwd, _ = self.backward_lstm(reverse_within_length(x, lengths))
        states = torch.cat([fwd, reverse_within_length(bwd, lengths)], dim=2)  # (B, T, 2H)
        scores = self.attention(states).squeeze(2)  # (B, T)
        scores = scores.masked_fill(attention_mask == 0, -1e4)
        weights = torch.softmax(scores, dim=1).unsqueeze(2)  # (B, T, 1)
        pooled = (weights * states).sum(dim=1)  # (B, 2H)
        return self.classifier(self.dropout(pooled))  # (B, L)


def build_bilstm(num_labels: int, vocab_size: int, embed_dim: int = 128, hidden: int = 128,
                 attention_dim: int = 128, dropout: float = 0.3, pad_id: int = 0) -> BiLSTMAttention:
    """Registry builder: a fresh :class:`BiLSTMAttention` from plain keyword arguments (saved as ``params``)."""
    return BiLSTMAttention(num_labels, vocab_size, embed_dim, hidden, attention_dim, dropout, pad_id)
