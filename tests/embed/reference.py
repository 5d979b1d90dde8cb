#!/usr/bin/env python3
"""Reference sentence embeddings for the embedding tests, computed independently of
llama.cpp and of the GGUF file: a NumPy forward pass of BERT over the Hugging Face
checkpoint (model.safetensors + config.json), tokenised by the `tokenizers` package from
tokenizer.json, then the sentence-transformers modules the model declares (modules.json):
mean (or CLS) pooling over the attention mask and L2 normalisation. For
sentence-transformers/all-MiniLM-L6-v2 this is what

    SentenceTransformer(DIR).encode(sentences, normalize_embeddings=False)

returns (the model's own Normalize module already normalises), computed in float64 with
the exact (erf) GELU that transformers' BERT uses.

    reference.py --model-dir DIR --out FILE [--sentences tests/embed/sentences.json] [--pooling cls]

writes {"sentences": [...], "vectors": [[...], ...], "token_ids": [[...], ...], ...}.
Each pair [i, j, k] of the sentences file is checked (sim(i, j) > sim(i, k)); a pair the
reference itself breaks is an error (exit status 2), since tests rely on them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent

# The widely quoted first values of SentenceTransformer("all-MiniLM-L6-v2").encode(
# "This is an example sentence"): a check that this NumPy pass is sentence-transformers'.
KNOWN = ("This is an example sentence",
         [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374481, 0.0026528, 0.0393750, -0.0070985])

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """transformers' "gelu": the exact form, 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class Bert:
    def __init__(self, model_dir: Path, dtype=np.float64):
        self.cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if self.cfg.get("hidden_act", "gelu") != "gelu":
            raise NotImplementedError(self.cfg["hidden_act"])
        if self.cfg.get("position_embedding_type", "absolute") != "absolute":
            raise NotImplementedError(self.cfg["position_embedding_type"])
        self.w: dict[str, np.ndarray] = {}
        for part in sorted(model_dir.glob("model*.safetensors")):
            with safe_open(part, framework="numpy") as f:
                for k in f.keys():
                    name = k[5:] if k.startswith("bert.") else k
                    self.w[name] = f.get_tensor(k).astype(dtype)
        self.n_layer = self.cfg["num_hidden_layers"]
        self.n_head = self.cfg["num_attention_heads"]
        self.eps = self.cfg.get("layer_norm_eps", 1e-12)

    def __call__(self, ids: list[int]) -> np.ndarray:
        """Last hidden state, (n_tokens, hidden), for one unpadded sequence (token type 0)."""
        w, n = self.w, len(ids)
        if n > self.cfg["max_position_embeddings"]:
            raise ValueError(f"{n} tokens > max_position_embeddings")
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        d = x.shape[1]
        hd = d // self.n_head

        def lin(t, name):
            return t @ w[name + ".weight"].T + w[name + ".bias"]

        for i in range(self.n_layer):
            p = f"encoder.layer.{i}."
            q = lin(x, p + "attention.self.query").reshape(n, self.n_head, hd).transpose(1, 0, 2)
            k = lin(x, p + "attention.self.key").reshape(n, self.n_head, hd).transpose(1, 0, 2)
            v = lin(x, p + "attention.self.value").reshape(n, self.n_head, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # no padding: the mask is all ones
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, d)
            x = layer_norm(lin(ctx, p + "attention.output.dense") + x,
                           w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                           self.eps)
            h = gelu(lin(x, p + "intermediate.dense"))
            x = layer_norm(lin(h, p + "output.dense") + x,
                           w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x


class SentenceEncoder:
    """The sentence-transformers pipeline of modules.json: Transformer, Pooling, [Normalize].
    float64 for the test's reference vectors; bench/bench_embed.py times it in float32."""

    def __init__(self, model_dir: Path, dtype=np.float64, pool: str | None = None):
        self.bert = Bert(model_dir, dtype)
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if types[:2] != ["Transformer", "Pooling"] or not set(types[2:]) <= {"Normalize"}:
            raise NotImplementedError(f"modules {types}")
        self.normalize = "Normalize" in types
        pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
                 if pooling.get("pooling_mode_" + m)]
        if modes not in (["mean_tokens"], ["cls_token"]):
            raise NotImplementedError(f"pooling {modes}")
        self.pooling = "mean" if modes == ["mean_tokens"] else "cls"
        # Another pooling than the model's own (the library's CLS test): the same
        # forward pass, the first token's ([CLS]) final hidden state.
        self.own_pooling = pool in (None, self.pooling)
        self.pooling = pool or self.pooling
        st = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self.max_seq_length = st.get("max_seq_length") or self.bert.cfg["max_position_embeddings"]
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # sentence-transformers tokenises with padding=True (to the longest in the batch;
        # masked out again by the pooling) and truncation to max_seq_length, whatever
        # tokenizer.json says (all-MiniLM-L6-v2's pads and truncates to 128).
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=self.max_seq_length)

    def token_ids(self, text: str) -> list[int]:
        return self.tok.encode(text).ids  # [CLS] ... [SEP]

    def encode(self, text: str) -> tuple[np.ndarray, list[int]]:
        ids = self.token_ids(text)
        h = self.bert(ids)
        v = h.mean(0) if self.pooling == "mean" else h[0]
        if self.normalize:
            v = v / max(np.linalg.norm(v), 1e-12)
        return v, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True,
                    help="the Hugging Face model directory (scripts/fetch-embed-model.sh prints the GGUF inside it)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sentences", type=Path, default=HERE / "sentences.json")
    ap.add_argument("--pooling", choices=("mean", "cls"),
                    help="pool this way instead of as the model declares (its pairs are then not checked)")
    args = ap.parse_args()

    spec = json.loads(args.sentences.read_text(encoding="utf-8"))
    sentences, pairs = spec["sentences"], spec.get("pairs", [])
    enc = SentenceEncoder(args.model_dir, pool=args.pooling)
    if enc.own_pooling and enc.bert.cfg.get("_name_or_path") == "nreimers/MiniLM-L6-H384-uncased":
        v, _ = enc.encode(KNOWN[0])
        if not np.allclose(v[:8], KNOWN[1], atol=2e-7):
            print(f"reference: {KNOWN[0]!r} gives {v[:8]}, not the published {KNOWN[1]}", file=sys.stderr)
            return 3
    vecs, ids = zip(*(enc.encode(s) for s in sentences))
    m = np.stack(vecs)

    sim = m @ m.T if enc.normalize else (m @ m.T) / np.outer(np.linalg.norm(m, axis=1), np.linalg.norm(m, axis=1))
    bad = [p for p in pairs if not sim[p[0], p[1]] > sim[p[0], p[2]]]
    for i, j, k in pairs:
        print(f"sim({i},{j}) = {sim[i, j]:.4f}  >  sim({i},{k}) = {sim[i, k]:.4f}"
              f"{'' if [i, j, k] not in bad else '   BROKEN'}", file=sys.stderr)

    out = {
        "model": json.loads((args.model_dir / "config.json").read_text(encoding="utf-8")).get("_name_or_path"),
        "pooling": enc.pooling,
        "normalized": enc.normalize,
        "max_seq_length": enc.max_seq_length,
        "sentences": list(sentences),
        "vectors": [[float(np.float32(x)) for x in v] for v in vecs],
        "token_ids": [list(t) for t in ids],
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    if bad and enc.own_pooling:
        print(f"reference: the model itself breaks pairs {bad}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
