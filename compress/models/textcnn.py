"""TextCNN student (Kim 2014): embeddings -> parallel 1-D convolutions -> masked max-over-time -> linear.

It reads the teacher's token ids (the teacher's tokenizer), so its embedding table can start from
the teacher's input embeddings (:func:`init_embeddings_from`). Convolutions are zero-padded to keep
the length ("same"), and padding positions are zeroed before and after them, so a text's output
does not depend on how much padding its batch carries, and the graph has no data-dependent control
flow (ONNX export with dynamic batch and sequence axes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextCNN(nn.Module):
    """Multi-label TextCNN.

    Args:
        num_labels: L outputs.
        vocab_size: rows of the embedding table (the tokenizer's vocabulary).
        embed_dim: E, embedding width.
        num_filters: F, filters per width.
        widths: convolution widths (default 3/4/5).
        dropout: before the classifier.
        pad_id: padding token id (its embedding row stays zero).
    """

    def __init__(self, num_labels: int, vocab_size: int, embed_dim: int = 128, num_filters: int = 128,
                 widths: Sequence[int] = (3, 4, 5), dropout: float = 0.3, pad_id: int = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.widths = tuple(int(w) for w in widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_filters * len(widths), num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Args: input_ids (B, T) long; attention_mask (B, T), 1 for real tokens. Returns: (B, L) logits."""
        mask = attention_mask.unsqueeze(1).to(self.embedding.weight.dtype)  # (B, 1, T)
        x = self.embedding(input_ids).transpose(1, 2) * mask  # (B, E, T)
        pooled = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            # "same" padding spelled out (left (w-1)//2): output t is centred on token t, (B, F, T)
            h = torch.relu(conv(F.pad(x, ((width - 1) // 2, width // 2))))
            # ReLU outputs are >= 0, so zeroing padding positions leaves the max over real ones unchanged.
            pooled.append((h * mask).amax(dim=2))  # (B, F)
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))  # (B, L)


def build_textcnn(num_labels: int, vocab_size: int, embed_dim: int = 128, num_filters: int = 128,
                  widths: Sequence[int] = (3, 4, 5), dropout: float = 0.3, pad_id: int = 0) -> TextCNN:
    """Registry builder: a fresh :class:`TextCNN` from plain keyword arguments (saved as ``params``)."""
    return TextCNN(num_labels, vocab_size, embed_dim, num_filters, tuple(int(w) for w in widths), dropout, pad_id)


@torch.no_grad()
def project_embeddings(table: Tensor, dim: int) -> Tensor:
    """Teacher embedding table (V, H) -> (V, dim): itself if ``dim == H``, else its top ``dim`` principal directions.

    The projection keeps the most variance a linear map to ``dim`` can keep, rescaled so rows have the
    teacher's average norm. ``dim > H`` pads with small random columns.
    """
    table = table.detach().float()
    v, h = table.shape
    if dim == h:
        return table.clone()
    if dim > h:
        extra = torch.randn(v, dim - h, generator=torch.Generator().manual_seed(0)) * table.std() * 0.1
        return torch.cat([table, extra], dim=1)
    centred = table - table.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh (H, H)
    projected = centred @ vh[:dim].T  # (V, dim)
    scale = table.norm(dim=1).mean() / projected.norm(dim=1).mean().clamp_min(1e-12)
    return projected * scale


@torch.no_grad()
def init_embeddings_from(student: nn.Module, teacher_embeddings: Tensor) -> None:
    """Copy (projected) teacher input embeddings (V, H) into ``student.embedding``, padding row kept at zero."""
    emb: nn.Embedding = student.embedding  # type: ignore[assignment]
    if emb.weight.shape[0] != teacher_embeddings.shape[0]:
        raise ValueError(f"student vocabulary {emb.weight.shape[0]} != teacher vocabulary "
                         f"{teacher_embeddings.shape[0]}")
    emb.weight.copy_(project_embeddings(teacher_embeddings, emb.weight.shape[1]))
    if emb.padding_idx is not None:
        emb.weight[emb.padding_idx].zero_()
