"""Precision by GPU (helpers.models.device_settings, helpers.sft.precision_args), checked by
faking the CUDA device: bf16 only where the GPU computes in bf16 natively (capability >= 8.0),
fp16 with loss scaling on T4 / V100, QLoRA's compute dtype following."""
import pytest
import torch

from helpers import models, sft

GPUS = {  # name: (capability, dtype, trainer precision flag)
    "Tesla T4": ((7, 5), torch.float16, "fp16"),
    "Tesla V100-SXM2-16GB": ((7, 0), torch.float16, "fp16"),
    "NVIDIA A100-SXM4-40GB": ((8, 0), torch.bfloat16, "bf16"),
    "NVIDIA L4": ((8, 9), torch.bfloat16, "bf16"),
    "NVIDIA H100 80GB HBM3": ((9, 0), torch.bfloat16, "bf16"),
}


def fake_gpu(monkeypatch, name, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    # what torch says on every one of them (it counts emulated bf16): must not be the test
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("gpu", list(GPUS))
def test_precision_follows_the_compute_capability(monkeypatch, gpu):
    cap, dtype, flag = GPUS[gpu]
    fake_gpu(monkeypatch, gpu, cap)
    ds = models.device_settings()
    assert ds["device"] == "cuda" and ds["gpu"] == gpu and ds["capability"] == f"{cap[0]}.{cap[1]}"
    assert ds["dtype"] == ds["autocast_dtype"] == dtype
    assert ds["qlora_compute_dtype"] == dtype and ds["qlora_device_map"] == {"": 0}
    assert models.qlora_config(ds).bnb_4bit_compute_dtype == dtype
    assert models.qlora_config(ds).bnb_4bit_quant_type == "nf4"
    args = sft.precision_args(ds)
    assert args == {"bf16": flag == "bf16", "fp16": flag == "fp16"}
    assert "use_cpu" not in args
    rec = models.precision_record(ds)
    assert rec["precision"] == ("fp16 with loss scaling" if flag == "fp16" else "bf16")
    assert rec["dtype"] == rec["qlora_compute_dtype"] == str(dtype).replace("torch.", "")
    table = sft.hyperparameters({"method": "qlora"}).set_index("parameter")["value"]
    assert table["precision"] == rec["precision"] and gpu in table["device"]


def test_fp16_trainer_arguments_turn_on_loss_scaling(monkeypatch, tmp_path):
    """The T4's trainer arguments ask for fp16 mixed precision; accelerate gives fp16 on a
    CUDA device a GradScaler (its native AMP path), which unscales fp32 gradients only."""
    from transformers import TrainingArguments

    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    chosen = sft.precision_args()
    monkeypatch.undo()  # the arguments are built here without a GPU to set up
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **chosen)
    assert args.fp16 and not args.bf16 and args.mixed_precision == "fp16"


def test_cpu_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
        ds = models.device_settings()
        assert ds["device"] == "cpu" and ds["dtype"] == torch.float32 and ds["gpu"] is None
        assert ds["qlora_device_map"] == {"": "cpu"}
        assert ds["qlora_compute_dtype"] == (torch.bfloat16 if native else torch.float32)
        assert ds["autocast_dtype"] == (torch.bfloat16 if native else None)
        assert sft.precision_args(ds) == {"use_cpu": True, "bf16": native, "fp16": False}


def test_fp16_base_keeps_fp32_adapters():
    """fp16 weights with fp32 trainable adapters: what the loss scaler needs (peft upcasts the
    adapters of a half-precision base); half-precision trainable weights are refused early."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def lora(autocast):
        base = AutoModelForCausalLM.from_pretrained(str(models.tiny_model_path()), dtype=torch.float16)
        return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
                              autocast_adapter_dtype=autocast)

    good = lora(True)
    assert {p.dtype for p in good.parameters() if not p.requires_grad} == {torch.float16}
    sft._check_fp32_trainable(good)
    with pytest.raises(RuntimeError, match="fp32 trainable"):
        sft._check_fp32_trainable(lora(False))
