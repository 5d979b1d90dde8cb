#!/usr/bin/env python3
"""Convert a Hugging Face BERT sentence-embedding model (model.safetensors, config.json,
tokenizer.json and, when present, the sentence-transformers modules.json / 1_Pooling) to
a GGUF file that llama.cpp loads as architecture "bert".

It does what llama.cpp's convert_hf_to_gguf.py does for `BertModel` (conversion/bert.py
and conversion/base.py of the llama.cpp this crate vendors), without torch or transformers:

* hyper-parameters as TextModel.set_gguf_parameters writes them for BERT (block count,
  context length, embedding / feed-forward length, head count, layer-norm epsilon, file
  type), then `bert.attention.causal = false` and `bert.pooling_type` read from the
  sentence-transformers Pooling module (mean / cls / lasttoken);
* the WordPiece vocabulary as BertModel.set_vocab writes it: tokenizer model "bert",
  the pre-tokenizer name from the same tokenizer hash table, every id 0..vocab_size-1
  (missing ids become "[PAD<id>]", UNUSED), added special tokens CONTROL, the rest
  NORMAL, then the "phantom space" rewrite (CONTROL kept, "##x" -> "x", "x" -> "\u2581x"),
  `tokenizer.ggml.token_type_count` from type_vocab_size, and the special-token ids /
  add_*_token flags through gguf.SpecialVocab;
* tensors named through gguf's BERT tensor map, after BertModel.filter_tensors' renames
  ("bert." prefix, gamma/beta) and skips (position_ids, pooler, cls.predictions,
  cls.seq_relationship); 1-D tensors, norms, position_embd and token_types stay F32 in
  every output type, like prepare_tensors.

The output depends only on the inputs, the output type and the model directory's name
(gguf.Metadata derives general.basename from it), so a pinned sha256 can check it.

Requires numpy, safetensors, tokenizers and gguf (PyPI). Usage:

    convert-bert-gguf.py MODEL_DIR --outfile OUT.gguf [--outtype f32|f16|q8_0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from hashlib import sha256
from pathlib import Path

import numpy as np

import gguf
from safetensors import safe_open
from tokenizers import Tokenizer

logger = logging.getLogger("convert-bert-gguf")

# The string convert_hf_to_gguf.py's get_vocab_base_pre() tokenizes; the sha256 of
# str(token ids) names the pre-tokenizer.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# The WordPiece entries of convert_hf_to_gguf.py's hash table. The table is a chain of
# `if`s, not `elif`s: 0876d13b... is listed for BAAI/bge-small-en-v1.5 ("bert-bge") and
# again, later, for jina-embeddings-v2-base-en ("jina-v2-en"), so the later name wins.
# llama.cpp ignores tokenizer.ggml.pre for the "bert" (WPM) tokenizer model anyway.
KNOWN_PRE = {
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
    "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448": "jina-v1-en",
}

POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}

# Key names llama.cpp reads (src/llama-arch.cpp) that older PyPI gguf releases have no
# writer method for.
KEY_NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
KEY_NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


def find_hparam(hparams: dict, keys, optional=False):
    for k in keys:
        if k in hparams:
            return hparams[k]
    if optional:
        return None
    raise KeyError(f"could not find any of: {keys}")


# ----------------------------------------------------------------------------- tensors


def filter_tensor_name(name: str) -> str | None:
    """BertModel.filter_tensors (+ TextModel / ModelBase): the HF name to map, or None to skip."""
    if name.startswith("bert."):
        name = name[5:]
    if name.endswith(".gamma"):
        name = name[:-6] + ".weight"
    if name.endswith(".beta"):
        name = name[:-5] + ".bias"
    # only used for embeddings: no pooler, no masked-LM / NSP heads
    if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
        return None
    if name.startswith(("cls.predictions", "cls.seq_relationship")):
        return None
    # TextModel.filter_tensors: multimodal prefixes (none exist in a BERT checkpoint)
    if name.startswith(("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.")):
        return None
    # prepare_tensors: "we don't need these"
    if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
        return None
    return name


def model_parts(dir_model: Path) -> list[Path]:
    parts = sorted(p for p in dir_model.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))
    if not parts:
        raise FileNotFoundError(f"no model*.safetensors in {dir_model}")
    return parts


def add_tensors(writer: gguf.GGUFWriter, dir_model: Path, block_count: int, ftype: gguf.LlamaFileType,
                hparams: dict) -> None:
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, block_count)
    cls_out_labels = cls_labels(hparams)

    def is_(new_name, key, bid):
        key_name = gguf.TENSOR_NAMES[key]
        if "{bid}" in key_name:
            if bid is None:
                return False
            key_name = key_name.format(bid=bid)
        elif bid is not None:
            return False
        return new_name == key_name + ".weight"

    for part in model_parts(dir_model):
        with safe_open(part, framework="numpy") as f:
            for hf_name in sorted(f.keys()):  # safetensors' (and gguf's SafetensorsLocal's) order
                name = filter_tensor_name(hf_name)
                if name is None:
                    logger.info("skip %s", hf_name)
                    continue
                data = f.get_tensor(hf_name)
                old_dtype = data.dtype
                if data.dtype not in (np.float16, np.float32):
                    data = data.astype(np.float32)

                if cls_out_labels and name in ("classifier.weight", "classifier.bias"):
                    name = name.replace("classifier.", "classifier.out_proj.")
                new_name = tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ValueError(f"Can not map tensor {hf_name!r}")

                bid = next((int(p) for p in name.split(".") if p.isdecimal()), None)
                n_dims = data.ndim
                qtype = None
                if n_dims <= 1 or new_name.endswith("_norm.weight"):
                    qtype = gguf.GGMLQuantizationType.F32
                elif any(is_(new_name, k, bid) for k in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)) \
                        or new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
                    qtype = gguf.GGMLQuantizationType.F32
                elif ftype == gguf.LlamaFileType.ALL_F32:
                    qtype = gguf.GGMLQuantizationType.F32
                elif ftype == gguf.LlamaFileType.MOSTLY_F16:
                    qtype = gguf.GGMLQuantizationType.F16
                elif ftype == gguf.LlamaFileType.MOSTLY_Q8_0:
                    # as convert_hf_to_gguf: the token embedding table stays F16 there too
                    qtype = gguf.GGMLQuantizationType.Q8_0
                else:
                    raise ValueError(f"unsupported output type {ftype.name}")

                out = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
                logger.info("%-32s %s --> %s, shape = {%s}", new_name + ",", old_dtype, qtype.name,
                            ", ".join(str(n) for n in reversed(out.shape)))
                writer.add_tensor(new_name, out, raw_dtype=qtype)


def cls_labels(hparams: dict):
    labels = hparams.get("id2label")
    if labels and len(labels) == 2 and labels.get("0", labels.get(0)) == "LABEL_0":
        return None  # dummy labels added by AutoConfig
    return labels


# ----------------------------------------------------------------------------- vocab


def tokenizer_pre(tok: Tokenizer, override: str | None) -> str:
    chkhsh = sha256(str(tok.encode(CHKTXT).ids).encode()).hexdigest()
    logger.info("chkhsh: %s", chkhsh)
    if override:
        return override
    if chkhsh not in KNOWN_PRE:
        raise NotImplementedError(f"pre-tokenizer not recognised (chkhsh {chkhsh}); pass --tokenizer-pre")
    return KNOWN_PRE[chkhsh]


def vocab_base(tok: Tokenizer, hparams: dict) -> tuple[list[str], list[int]]:
    """TextModel.get_vocab_base for a WordPiece tokenizer.json."""
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = hparams.get("vocab_size", len(vocab))
    assert max(vocab.values()) < vocab_size
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_tokens_decoder()  # id -> AddedToken
    added_by_text = {a.content: i for i, a in added.items()}

    tokens: list[str] = []
    toktypes: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added_by_text:
            a = added[i]
            if not a.normalized:
                # llama.cpp expects CONTROL / USER_DEFINED tokens pre-normalised
                prev = token
                token = tok.decode(tok.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
                if token != prev:
                    logger.info("%r is encoded and decoded back to %r", prev, token)
            if a.special or looks_special(token):
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, toktypes


def looks_special(t: str) -> bool:
    """TextModel.does_token_look_special."""
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<｜") and t.endswith("｜>"))
            or (t.startswith("<unused") and t.endswith(">")))


def set_vocab(writer: gguf.GGUFWriter, dir_model: Path, hparams: dict, pre_override: str | None) -> None:
    """BertModel.set_vocab."""
    tok = Tokenizer.from_file(str(dir_model / "tokenizer.json"))
    # as transformers' encode() calls it: no truncation and no padding, whatever
    # tokenizer.json configures (all-MiniLM-L6-v2's pads and truncates to 128)
    tok.no_truncation()
    tok.no_padding()
    model_type = json.loads(tok.to_str())["model"]["type"]
    if model_type != "WordPiece":
        raise NotImplementedError(f"tokenizer model {model_type!r}: only WordPiece (BertTokenizer) is handled")
    pre = tokenizer_pre(tok, pre_override)
    tokens, toktypes = vocab_base(tok, hparams)

    writer.add_token_type_count(hparams.get("type_vocab_size", 1))

    def phantom(t, tt):
        if tt == gguf.TokenType.CONTROL:
            return t
        if t.startswith("##"):
            return t[2:]
        return "\u2581" + t

    tokens = [phantom(t, tt) for t, tt in zip(tokens, toktypes)]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)

    special = gguf.SpecialVocab(dir_model, n_vocab=len(tokens))
    special.add_to_gguf(writer)
    if not hasattr(special, "normalizer_lowercase"):
        # gguf-py newer than PyPI's 0.19 reads these from tokenizer.json's normalizer
        # (SpecialVocab._parse_normalizer) and writes the ones that are not null.
        lower, strip = normalizer_flags(json.loads(tok.to_str()).get("normalizer"))
        if lower is not None:
            writer.add_bool(KEY_NORMALIZER_LOWERCASE, lower)
        if strip is not None:
            writer.add_bool(KEY_NORMALIZER_STRIP_ACCENTS, strip)


def normalizer_flags(n) -> tuple[bool | None, bool | None]:
    lower = strip = None
    if not n:
        return lower, strip
    t = n.get("type")
    if t == "Lowercase":
        lower = True
    elif t == "StripAccents":
        strip = True
    elif t == "BertNormalizer":
        lower = n.get("lowercase")
        strip = n.get("strip_accents")
    elif t == "Sequence":
        for sub in n.get("normalizers", []):
            l2, s2 = normalizer_flags(sub)
            lower = l2 if l2 is not None else lower
            strip = s2 if s2 is not None else strip
    return lower, strip


# ----------------------------------------------------------------------------- hparams


def pooling_type(dir_model: Path):
    """TextModel._try_set_pooling_type: the sentence-transformers Pooling module's mode."""
    modules = dir_model / "modules.json"
    if not modules.is_file():
        return None
    path = next((m["path"] for m in json.loads(modules.read_text(encoding="utf-8")) if m["type"].endswith("Pooling")),
                None)
    if path is None:
        return None
    pooling = json.loads((dir_model / path / "config.json").read_text(encoding="utf-8"))
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if pooling.get("pooling_mode") in POOLING:
        return POOLING[pooling["pooling_mode"]]
    raise NotImplementedError("Only MEAN, CLS, and LAST pooling types supported")


def set_gguf_parameters(writer: gguf.GGUFWriter, dir_model: Path, hparams: dict, block_count: int,
                        ftype: gguf.LlamaFileType) -> None:
    """TextModel.set_gguf_parameters (the keys a BERT config has) + BertModel's."""
    writer.add_block_count(block_count)
    n_ctx = find_hparam(hparams, ["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                  "max_sequence_length", "model_max_length"], optional=True)
    if n_ctx is not None:
        writer.add_context_length(n_ctx)
    if (n_embd := find_hparam(hparams, ["hidden_size", "n_embd", "dim"], optional=True)) is not None:
        writer.add_embedding_length(n_embd)
    if (n_ff := find_hparam(hparams, ["prefix_dense_intermediate_size", "dense_intermediate_size",
                                      "intermediate_size", "n_inner", "hidden_dim"], optional=True)) is not None:
        writer.add_feed_forward_length(n_ff)
    if (n_head := find_hparam(hparams, ["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
        writer.add_head_count(n_head)
    if (n_head_kv := find_hparam(hparams, ["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
        writer.add_head_count_kv(n_head_kv)
    if hparams.get("is_causal") is False:
        writer.add_causal_attention(False)
    if (eps := find_hparam(hparams, ["rms_norm_eps", "norm_eps"], optional=True)) is not None:
        writer.add_layer_norm_rms_eps(eps)
    if (eps := find_hparam(hparams, ["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], optional=True)) is not None:
        writer.add_layer_norm_eps(eps)
    if (head_dim := hparams.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)

    # BertModel.set_gguf_parameters
    if hparams.get("is_causal") is not False:
        writer.add_causal_attention(False)
    if (pt := pooling_type(dir_model)) is not None:
        writer.add_pooling_type(pt)
    if hparams.get("classifier_pooling") is not None:
        raise NotImplementedError("classifier_pooling is not handled by this converter")
    if labels := cls_labels(hparams):
        writer.add_classifier_output_labels([v for _, v in sorted(labels.items())])


# ----------------------------------------------------------------------------- main


def convert(dir_model: Path, outfile: Path, outtype: str, pre_override: str | None = None) -> None:
    hparams = json.loads((dir_model / "config.json").read_text(encoding="utf-8"))
    archs = hparams.get("architectures") or []
    if not set(archs) & {"BertModel", "BertForMaskedLM", "BertForSequenceClassification"} \
            and hparams.get("model_type") != "bert":
        raise NotImplementedError(f"not a BERT model: architectures={archs} model_type={hparams.get('model_type')}")
    if hparams.get("position_embedding_type", "absolute") != "absolute":
        raise NotImplementedError("only absolute position embeddings")
    if hparams.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError(f"llama.cpp's BERT graph uses GELU, the model uses {hparams['hidden_act']}")
    if "text_config" in hparams:
        hparams = {**hparams, **hparams["text_config"]}
    block_count = find_hparam(hparams, ["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])

    # ModelBase.write(): prepare_tensors, then prepare_metadata (type, general.*, hparams,
    # quantization version, vocab), then the file.
    add_tensors(writer, dir_model, block_count, ftype, hparams)

    total, shared, expert, expert_count = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, dir_model, None, total)
    if metadata.name is None:
        metadata.name = dir_model.name
    if metadata.size_label is None and total > 0:
        metadata.size_label = gguf.size_label(total, shared, expert, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    metadata.set_gguf_meta_model(writer)
    set_gguf_parameters(writer, dir_model, hparams, block_count, ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    set_vocab(writer, dir_model, hparams, pre_override)

    outfile.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file(path=outfile)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    logger.info("wrote %s", outfile)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path, help="directory with config.json, model.safetensors, tokenizer.json")
    ap.add_argument("--outfile", type=Path, required=True)
    ap.add_argument("--outtype", choices=["f32", "f16", "q8_0"], default="f32")
    ap.add_argument("--tokenizer-pre", help="tokenizer.ggml.pre to write when the tokenizer hash is not known")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(name)s: %(message)s")
    convert(args.model_dir, args.outfile, args.outtype, args.tokenizer_pre)
    return 0


if __name__ == "__main__":
    sys.exit(main())
