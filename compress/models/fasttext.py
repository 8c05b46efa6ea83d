"""fastText-style baseline (Joulin et al. 2017) in PyTorch.

Each text becomes a bag of hashed features: lower-cased word unigrams and n-grams up to
``word_ngrams``, plus character ``minn..maxn``-grams of ``<word>`` (subword information,
Bojanowski et al. 2017). Features hash (crc32, stable across runs and machines) into ``buckets``
rows of an embedding table; the text vector is their mean, and one linear layer gives L logits.
Trained with BCE in the shared training loop (:func:`compress.loop.run_loop`): the feature ids
travel as ``input_ids`` with an ``attention_mask``, exactly like token ids.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def hashed_features(text: str, buckets: int, word_ngrams: int = 2, minn: int = 3, maxn: int = 5,
                    max_features: int = 512) -> list[int]:
    """Feature ids in ``[1, buckets)`` of one text (0 is padding); at most ``max_features``, words first."""
    words = _TOKEN.findall(text.lower())
    feats = [f"w:{w}" for w in words]
    for n in range(2, word_ngrams + 1):
        feats.extend(f"n{n}:" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if maxn >= minn > 0:
        for w in words:
            padded = f"<{w}>"
            for n in range(minn, maxn + 1):
                feats.extend(f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1))
    return [1 + zlib.crc32(f.encode("utf-8")) % (buckets - 1) for f in feats[:max_features]]


class FastTextNet(nn.Module):
    """Mean of hashed-feature embeddings -> linear.

    Args:
        num_labels: L.
        buckets: rows of the feature table (row 0 is padding).
        dim: D, embedding width.
    """

    def __init__(self, num_labels: int, buckets: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(buckets, dim, padding_idx=0)
        nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)  # fastText's initialisation
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.classifier = nn.Linear(dim, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Args: input_ids (B, T) feature ids; attention_mask (B, T). Returns: (B, L) logits."""
        mask = attention_mask.unsqueeze(2).to(self.embedding.weight.dtype)  # (B, T, 1)
        summed = (self.embedding(input_ids) * mask).sum(dim=1)  # (B, D)
        return self.classifier(summed / mask.sum(dim=1).clamp_min(1.0))


class FastTextBaseline:
    """The featurizer plus :class:`FastTextNet`; ``fit`` / ``predict_proba`` / ``save`` / ``load``.

    Args:
        num_labels: L.
        dim / buckets: embedding width and hash-table rows.
        word_ngrams: longest word n-gram (2 = unigrams + bigrams).
        minn / maxn: character n-gram range (``maxn < minn`` disables them).
        max_features: cap on features per text.
    """

    architecture = "fasttext"

    def __init__(self, num_labels: int, dim: int = 32, buckets: int = 2**16, word_ngrams: int = 2, minn: int = 3,
                 maxn: int = 5, max_features: int = 512) -> None:
        self.num_labels = int(num_labels)
        self.params: dict[str, Any] = {"dim": int(dim), "buckets": int(buckets), "word_ngrams": int(word_ngrams),
                                       "minn": int(minn), "maxn": int(maxn), "max_features": int(max_features)}
        if self.params["buckets"] < 2 or self.params["dim"] < 1:
            raise ValueError("fasttext: buckets must be >= 2 and dim >= 1")
        self.net = FastTextNet(self.num_labels, self.params["buckets"], self.params["dim"])

    def encode(self, texts: Sequence[str], targets: np.ndarray | None = None):
        """Texts -> :class:`~compress.batching.Encoded` of hashed feature ids (pad id 0)."""
        from compress.batching import Encoded

        p = self.params
        ids = [hashed_features(t, p["buckets"], p["word_ngrams"], p["minn"], p["maxn"], p["max_features"])
               for t in texts]
        return Encoded(ids, None if targets is None else np.asarray(targets, dtype=np.float32), 0)

    def fit(self, train_texts: Sequence[str], train_labels: np.ndarray, val_texts: Sequence[str],
            val_labels: np.ndarray, label_names: Sequence[str], *, optim, tracker, workdir: Path,
            loss_fn: nn.Module | None = None, schema=None) -> dict:
        """Train with BCE (or ``loss_fn``) in the shared loop, keeping the best epoch on ``optim.select_metric``.

        Args:
            optim: a :class:`~compress.config.OptimConfig`.
            schema: the labels' ``LabelSchema`` (per-level validation metrics), None for a flat one.
            tracker: a :class:`~compress.tracking.Tracker` (per-epoch metrics).
            workdir: the loop's per-epoch checkpoint directory (removed by the caller).

        Returns:
            ``{"best_epoch", "history", "train_seconds", "train_examples_per_s"}``.
        """
        from compress.loop import Checkpointing, LoopData, run_loop
        from compress.losses import BCELoss

        data = LoopData(self.encode(train_texts, train_labels), self.encode(val_texts), np.asarray(val_labels),
                        list(label_names), schema)
        result = run_loop(self.net, data, loss_fn or BCELoss(), optim, "no", tracker,
                          Checkpointing(Path(workdir), resume=False, fingerprint="fasttext"))
        self.net.eval()
        return {"best_epoch": result.state.best_epoch, "epochs_run": result.state.epoch,
                "history": result.state.history, "train_seconds": result.train_seconds,
                "train_examples_per_s": result.examples_per_s}

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(N, L) float32 probabilities."""
        from compress.predict import predict_logits, sigmoid

        texts = list(texts)
        if not texts:
            return np.empty((0, self.num_labels), dtype=np.float32)
        return sigmoid(predict_logits(self.net, self.encode(texts), batch_size))

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(directory / MODEL_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(
            {"architecture": self.architecture, "params": self.params, "num_labels": self.num_labels}, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FastTextBaseline:
        """Inverse of :meth:`save`, in eval mode."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / CONFIG_FILE).read_text())
        model = cls(config["num_labels"], **config["params"])
        model.net.load_state_dict(load_file(str(directory / MODEL_FILE)))
        model.net.eval()
        return model
