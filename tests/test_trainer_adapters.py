"""The reference switch: ``adapters_disabled`` runs the base network exactly as diffusers' own
``disable_adapters`` does, and leaves every layer as it found it."""

import pytest
import torch

from pluralign.trainers.adapters import adapters_disabled


@pytest.fixture()
def unet_with_lora(tiny_pipeline_dir):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(str(tiny_pipeline_dir("sd")), subfolder="unet")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights="gaussian"), adapter_name="intent")
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA that changes the output
            if "lora" in name:
                p.requires_grad_(True)
    return unet


def _out(unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    emb = torch.randn(2, 4, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=emb).sample


def test_the_switch_gives_diffusers_reference_and_restores_each_layer(unet_with_lora):
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = unet_with_lora
    on = _out(unet)
    unet.disable_adapters()
    reference = _out(unet)
    unet.enable_adapters()
    assert not torch.equal(on, reference)
    with adapters_disabled(unet):
        assert torch.equal(_out(unet), reference)
    assert torch.equal(_out(unet), on)
    assert all(p.requires_grad for n, p in unet.named_parameters() if "lora" in n)
    # a layer switched off before the block stays off after it
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    layers[0]._disable_adapters = True
    partly = _out(unet)
    with adapters_disabled(unet):
        assert torch.equal(_out(unet), reference)
    assert layers[0].disable_adapters and not layers[1].disable_adapters and torch.equal(_out(unet), partly)


def test_a_peft_that_reads_another_switch_falls_back_on_diffusers_calls(unet_with_lora, monkeypatch):
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = unet_with_lora
    unet.disable_adapters()
    reference = _out(unet)
    unet.enable_adapters()
    monkeypatch.setattr(BaseTunerLayer, "disable_adapters", property(lambda self: False))  # never reads the flag
    calls = []
    real_disable, real_enable = unet.disable_adapters, unet.enable_adapters
    monkeypatch.setattr(unet, "disable_adapters", lambda: (calls.append("off"), real_disable())[1])
    monkeypatch.setattr(unet, "enable_adapters", lambda: (calls.append("on"), real_enable())[1])
    with adapters_disabled(unet):
        pass
    assert calls == ["off", "on"]
    monkeypatch.undo()
    assert torch.equal(_out(unet), _out(unet)) and not torch.equal(_out(unet), reference)
