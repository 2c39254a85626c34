"""Tiny checkpoints in the real LDM layout go through the same loader as real ones and run."""
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.models.checkpoint_io import CheckpointError, read_state_dict
from modules.models.families import Family
from modules.models.loading import load_model, predicts_v
from modules.models.memory import Placement
from modules.models.model_files import ModelFile
from tests import ldm_layout as ldm


def load(path, policy, **kw):
    return load_model(ModelFile(path, path.name), policy, **kw)


def encode(model, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context for the UNet (penultimate layers for SD2/SDXL) and SDXL's pooled embedding."""
    contexts, pooled = [], None
    for tok, enc in zip(model.tokenizers, model.text_encoders, strict=True):
        ids = tok(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = enc(ids, output_hidden_states=True)
        if model.family in (Family.SDXL, Family.SDXL_REFINER):
            contexts.append(out.hidden_states[-2])
            if hasattr(out, "text_embeds"):
                pooled = out.text_embeds
        else:
            contexts.append(out.last_hidden_state)
    return torch.cat(contexts, dim=-1), pooled


def unet_step(model, context, pooled, size=32):
    cfg = model.unet.config
    x = torch.randn(1, cfg.in_channels, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    extra = {}
    if pooled is not None:
        n_ids = 6 if model.family == Family.SDXL else 5
        extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": torch.tensor([[size] * n_ids]).float()}
    return model.unet(x, torch.tensor([500]), encoder_hidden_states=context, **extra).sample


CASES = [
    ("tiny-sd1.safetensors", Family.SD1, "eps", False),
    ("sd2/tiny-sd2-v.safetensors", Family.SD2, "v", False),
    ("tiny-sdxl.safetensors", Family.SDXL, "eps", False),
    ("tiny-sd1-inpainting.ckpt", Family.SD1, "eps", True),
]


@pytest.mark.parametrize("name,family,prediction,inpainting", CASES)
def test_tiny_checkpoint_loads_encodes_steps_and_round_trips(tiny_dir, cpu_policy, name, family, prediction,
                                                             inpainting):
    model = load(tiny_dir / name, cpu_policy)
    assert model.spec.family == family
    assert model.spec.prediction == prediction
    assert model.spec.is_inpainting == inpainting

    with torch.no_grad():
        ctx_a, pooled = encode(model, "a red circle on a blue background")
        ctx_b, _ = encode(model, "a green star")
        assert ctx_a.shape == (1, 77, model.unet.config.cross_attention_dim)
        assert not torch.allclose(ctx_a, ctx_b), "different prompts must give different conditioning"

        eps = unet_step(model, ctx_a, pooled)
        assert eps.shape == (1, 4, 4, 4) and torch.isfinite(eps).all()

        image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        image = image.to(model.vae.dtype)
        latent = model.vae.encode(image).latent_dist.mean
        assert latent.shape == (1, 4, 16, 16)
        decoded = model.vae.decode(latent).sample
        assert decoded.shape == image.shape and torch.isfinite(decoded).all()


def test_weights_land_in_the_right_places(tiny_dir, cpu_policy):
    """Spot checks that LDM names were mapped onto the matching diffusers/transformers parameters."""
    sd = load_file(str(tiny_dir / "tiny-sdxl.safetensors"))
    model = load(tiny_dir / "tiny-sdxl.safetensors", cpu_policy)
    unet = model.unet
    assert torch.equal(unet.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"].float())
    assert torch.equal(unet.add_embedding.linear_1.weight, sd["model.diffusion_model.label_emb.0.0.weight"].float())
    assert torch.equal(model.vae.decoder.conv_out.weight, sd["first_stage_model.decoder.conv_out.weight"].float())
    big = model.text_encoders[1]
    prefix = "conditioner.embedders.1.model."
    qkv = sd[prefix + "transformer.resblocks.1.attn.in_proj_weight"].float()
    h = qkv.shape[1]
    layer = big.text_model.encoder.layers[1].self_attn
    assert torch.equal(layer.q_proj.weight, qkv[:h]) and torch.equal(layer.v_proj.weight, qkv[2 * h:])
    assert torch.equal(big.text_projection.weight, sd[prefix + "text_projection"].float().T)
    clip_l = model.text_encoders[0]
    assert torch.equal(clip_l.get_input_embeddings().weight,
                       sd["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"].float())


def test_sd2_uses_penultimate_layer(tiny_dir, cpu_policy):
    """SD2 conditions on the penultimate OpenCLIP layer: the last layer is not built at all."""
    model = load(tiny_dir / "sd2" / "tiny-sd2-v.safetensors", cpu_policy)
    assert model.text_encoders[0].config.num_hidden_layers == ldm.TINY_SD2.text[0].layers - 1


def test_same_weights_from_ckpt_and_safetensors(tmp_path, cpu_policy):
    a = ldm.write_checkpoint(tmp_path / "a.safetensors", ldm.TINY_SD1, seed=7)
    b = ldm.write_checkpoint(tmp_path / "b.ckpt", ldm.TINY_SD1, seed=7)
    ma, mb = load(a, cpu_policy), load(b, cpu_policy)
    for pa, pb in zip(ma.unet.parameters(), mb.unet.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_v_prediction_marker_key_and_yaml(tmp_path, cpu_policy):
    sd = ldm.materialize(ldm.TINY_SDXL.shapes(), seed=0)
    sd["v_pred"] = torch.tensor([])
    save_file(sd, str(tmp_path / "vpred-xl.safetensors"))
    assert load(tmp_path / "vpred-xl.safetensors", cpu_policy).spec.prediction == "v"
    base_yaml = "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    linear_start: 0.00085\n"
    plain = ldm.write_checkpoint(tmp_path / "sd2-base.safetensors", ldm.TINY_SD2, yaml_text=base_yaml)
    assert load(plain, cpu_policy).spec.prediction == "eps"  # a yaml without parameterization means eps


def test_zero_terminal_snr_marker_rescales_the_schedule(tmp_path, cpu_policy):
    sd = ldm.materialize(ldm.TINY_SD1.shapes(), seed=0)
    sd["ztsnr"] = torch.tensor([])
    save_file(sd, str(tmp_path / "ztsnr.safetensors"))
    model = load(tmp_path / "ztsnr.safetensors", cpu_policy)
    plain = load(ldm.write_checkpoint(tmp_path / "plain.safetensors", ldm.TINY_SD1), cpu_policy)
    assert model.spec.zero_terminal_snr and not plain.spec.zero_terminal_snr
    sigma_max = ((1 - model.alphas_cumprod[-1]) / model.alphas_cumprod[-1]).sqrt()
    assert 4000 < sigma_max < 5000 and torch.allclose(model.alphas_cumprod[0], plain.alphas_cumprod[0])


class _StandInUNet(torch.nn.Module):
    """Answers at t=999 the way a trained eps model (returns the noise) or v model (returns about
    minus a clean latent, plus a little noise) does."""

    def __init__(self, kind: str, in_channels: int = 4):
        super().__init__()
        self.kind = kind
        self.config = types.SimpleNamespace(in_channels=in_channels, cross_attention_dim=64)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, *_timestep, **_context):  # called as the real UNet is; only the latent matters
        latent = x[:, :4]
        clean = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
        out = 0.99 * latent if self.kind == "eps" else 0.07 * latent - clean
        return types.SimpleNamespace(sample=out)


@pytest.mark.parametrize("kind,in_channels", [("eps", 4), ("v", 4), ("eps", 9), ("v", 9)])
def test_sd2_v_prediction_probe_without_yaml(cpu_policy, kind, in_channels):
    unet = _StandInUNet(kind, in_channels)
    placement = Placement(cpu_policy, {"unet": unet})
    assert predicts_v(unet, placement, torch.float32) == (kind == "v")


def test_legacy_clip_key_layout_loads(tmp_path, cpu_policy):
    """Early SD1 files name the text encoder without transformers' 'text_model.' level."""
    sd = ldm.materialize(ldm.TINY_SD1.shapes(), seed=0)
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in sd.items()}
    old["cond_stage_model.transformer.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(old, str(tmp_path / "old.safetensors"))
    model = load(tmp_path / "old.safetensors", cpu_policy)
    assert torch.equal(model.text_encoders[0].get_input_embeddings().weight,
                       sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"])


def test_fp8_unet_storage_computes_close_to_full_precision(tiny_dir, cpu_policy):
    path = tiny_dir / "tiny-sd1.safetensors"
    full = load(path, cpu_policy)
    fp8 = load(path, cpu_policy, fp8_unet="Enable")
    linear = fp8.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert linear.weight.dtype == torch.float8_e4m3fn
    with torch.no_grad():
        ctx, _ = encode(full, "a red circle")
        a, b = unet_step(full, ctx, None), unet_step(fp8, ctx, None)
    assert torch.isfinite(b).all()
    # e4m3 keeps 3 mantissa bits, so outputs differ a little but point the same way
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95
    sdxl_only = load(path, cpu_policy, fp8_unet="Enable for SDXL")
    assert sdxl_only.unet.conv_in.weight.dtype == torch.float32


def test_reading_is_lazy_for_safetensors(tiny_dir):
    sd = read_state_dict(tiny_dir / "tiny-sd1.safetensors")
    assert "model.diffusion_model.input_blocks.0.0.weight" in sd
    assert sd.shape("model.diffusion_model.input_blocks.0.0.weight") == (32, 4, 3, 3)


def test_checkpoint_without_text_encoder_is_explained(tmp_path, cpu_policy):
    sd = {k: v for k, v in ldm.materialize(ldm.TINY_SD1.shapes()).items() if not k.startswith("cond_stage_model.")}
    save_file(sd, str(tmp_path / "unet-vae-only.safetensors"))
    with pytest.raises(CheckpointError, match="unet-vae-only.safetensors.*no text encoder"):
        load(tmp_path / "unet-vae-only.safetensors", cpu_policy)


@pytest.mark.parametrize("declared, native", [("256x256", 256), ("64X64", 64), ("768x512", 512), ("huge", 512),
                                               ("7x7", 512)])
def test_native_size_from_modelspec_metadata(tmp_path, cpu_policy, declared, native):
    path = ldm.write_checkpoint(tmp_path / "m.safetensors", ldm.TINY_SD1, metadata={"modelspec.resolution": declared})
    assert load_model(ModelFile(path, "m"), cpu_policy).spec.native_size == native
