"""TF-IDF + logistic regression baseline (scikit-learn).

Word 1-2-gram and character 2-5-gram (within word boundaries) TF-IDF features, sublinear term
frequency, one ``LogisticRegression`` per label (liblinear). A label with a single class in the training data
gets a constant at its prior instead. Saved without pickle, so loading an artifact runs no code:
``model/config.json``, ``model/vocab_word.json`` + ``model/vocab_char.json`` (term -> column) and
``model/weights.npz`` (idf vectors, (L, F) coefficients, (L,) intercepts).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.npz"
CONFIG_FILE = "config.json"


class TfidfBaseline:
    """Multi-label TF-IDF + per-label logistic regression.

    Args:
        num_labels: L.
        C: inverse regularisation strength of each logistic regression.
        word_ngrams / char_ngrams: (min, max) n-gram ranges.
        word_max_features / char_max_features: vocabulary caps (most frequent first).
        min_df: minimum document frequency of a feature.
        class_weight: ``"balanced"`` or None.
        max_iter: solver iterations.
    """

    architecture = "tfidf"

    def __init__(self, num_labels: int, C: float = 4.0, word_ngrams: Sequence[int] = (1, 2),  # noqa: N803
                 char_ngrams: Sequence[int] = (2, 5), word_max_features: int = 50000,
                 char_max_features: int = 100000, min_df: int = 2, class_weight: str | None = None,
                 max_iter: int = 1000, seed: int = 0) -> None:
        self.num_labels = int(num_labels)
        self.params: dict[str, Any] = {
            "C": float(C), "word_ngrams": [int(x) for x in word_ngrams], "char_ngrams": [int(x) for x in char_ngrams],
            "word_max_features": int(word_max_features), "char_max_features": int(char_max_features),
            "min_df": int(min_df), "class_weight": class_weight, "max_iter": int(max_iter), "seed": int(seed),
        }
        self.state: dict[str, Any] | None = None

    def _vectorizers(self, n_docs: int):
        from sklearn.feature_extraction.text import TfidfVectorizer

        p = self.params
        min_df = min(p["min_df"], max(1, n_docs // 2))  # a tiny corpus must still yield features
        word = TfidfVectorizer(analyzer="word", ngram_range=tuple(p["word_ngrams"]), min_df=min_df,
                               max_features=p["word_max_features"], sublinear_tf=True, lowercase=True,
                               token_pattern=r"(?u)\b\w+\b", dtype=np.float32)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(p["char_ngrams"]), min_df=min_df,
                               max_features=p["char_max_features"], sublinear_tf=True, lowercase=True,
                               dtype=np.float32)
        return word, char

    def _features(self, texts: Sequence[str]):
        from scipy.sparse import hstack

        assert self.state is not None, "fit or load the model first"
        return hstack([self.state["word"].transform(texts), self.state["char"].transform(texts)]).tocsr()

    def fit(self, train_texts: Sequence[str], train_labels: np.ndarray, val_texts: Sequence[str] | None = None,
            val_labels: np.ndarray | None = None, label_names: Sequence[str] = (), **_: Any) -> dict:
        """Fit vectorizers and one classifier per label on (N, L) 0/1 ``train_labels``.

        Validation data is not used (thresholds are tuned by the caller). Returns timing and size.
        """
        import time

        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        texts = list(train_texts)
        word, char = self._vectorizers(len(texts))
        x = hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()  # (N, F)
        y = np.asarray(train_labels)
        coef = np.zeros((self.num_labels, x.shape[1]), dtype=np.float64)
        intercept = np.zeros(self.num_labels, dtype=np.float64)
        for j in range(self.num_labels):
            col = y[:, j].astype(np.int64)
            if col.min() == col.max():  # one class only: a constant at the (clipped) prior
                prior = float(np.clip(col.mean(), 1e-6, 1 - 1e-6))
                intercept[j] = np.log(prior / (1 - prior))
                continue
            clf = LogisticRegression(C=self.params["C"], class_weight=self.params["class_weight"], solver="liblinear",
                                     max_iter=self.params["max_iter"], random_state=self.params["seed"]).fit(x, col)
            coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
        self.state = {"word": word, "char": char, "coef": coef, "intercept": intercept}
        seconds = time.perf_counter() - t0
        log.info("tfidf: %d features, %d labels fitted in %.1f s", x.shape[1], self.num_labels, seconds)
        return {"train_seconds": seconds, "num_features": int(x.shape[1]), "train_examples_per_s": len(texts) / seconds}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) float32 probabilities: ``sigmoid(tfidf(texts) @ coef.T + intercept)`` (logistic regression)."""
        from scipy.special import expit

        assert self.state is not None, "fit or load the model first"
        texts = list(texts)
        if not texts:
            return np.empty((0, self.num_labels), dtype=np.float32)
        scores = self._features(texts) @ self.state["coef"].T + self.state["intercept"]  # (N, L)
        return expit(np.asarray(scores)).astype(np.float32)

    def num_parameters(self) -> int:
        """Learned weights: coefficients + intercepts of the per-label classifiers."""
        assert self.state is not None
        return int(self.state["coef"].size + self.state["intercept"].size)

    def save(self, directory: str | Path) -> None:
        """Write ``config.json``, the two vocabularies (JSON) and ``weights.npz`` (idf, coef, intercept)."""
        assert self.state is not None, "fit the model before saving it"
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("word", "char"):
            vocab = {term: int(i) for term, i in self.state[name].vocabulary_.items()}
            (directory / f"vocab_{name}.json").write_text(json.dumps(vocab, ensure_ascii=False))
        np.savez(directory / WEIGHTS_FILE, idf_word=self.state["word"].idf_, idf_char=self.state["char"].idf_,
                 coef=self.state["coef"], intercept=self.state["intercept"])
        (directory / CONFIG_FILE).write_text(json.dumps(
            {"architecture": self.architecture, "params": self.params, "num_labels": self.num_labels}, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> TfidfBaseline:
        """Inverse of :meth:`save` (plain JSON and arrays: loading runs no code)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text())
            model = cls(config["num_labels"], **config["params"])
            word, char = model._vectorizers(2)
            with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as arrays:
                weights = {k: arrays[k] for k in arrays.files}
            for name, vectorizer in (("word", word), ("char", char)):
                vectorizer.vocabulary_ = json.loads((directory / f"vocab_{name}.json").read_text(encoding="utf-8"))
                vectorizer.idf_ = weights[f"idf_{name}"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{directory} does not hold a readable tfidf baseline ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:120]}); re-create it with `compress baseline tfidf`") \
                from None
        model.state = {"word": word, "char": char, "coef": weights["coef"], "intercept": weights["intercept"]}
        return model
