"""LoRA and LyCORIS networks merged into a loaded model's weights, as A1111 applies them.

A network file in the kohya / LyCORIS layout holds, per target module, factors whose product is a
change of that module's weight. Keys are `<module>.<part>`: the module is `lora_unet_...` for the
UNet, `lora_te_...` for the SD1/SD2 text encoder and `lora_te1_...`/`lora_te2_...` for SDXL's two,
followed by the module's own name with '.' written as '_'. UNet names come in diffusers naming
(`down_blocks_0_attentions_0_...`, usual for SD1/SD2) or in the original LDM naming
(`input_blocks_4_1_...`, usual for SDXL); both are looked up. Supported: LoRA and LoCon
(`lora_down`/`lora_up`, optional `lora_mid`), LoHa (`hada_*`), LoKr (`lokr_*`) and full
differences (`diff`, `diff_b`).

Merging changes the weights in place, so generation runs at full speed with no extra modules.
Before a weight is changed the first time, its original is copied to system RAM in the dtype it
is stored in; every new set of networks starts again from these copies, so weights come back bit
for bit however often networks change. Deltas are computed in float32 and the sum is rounded
once to the weight's dtype. With fp8 weight storage that rounding is coarse (the merged network is
approximated to fp8 like every other weight), but restoring stays exact.
"""
from modules.conditioning.extra_networks import LoraRequest
from modules.conditioning.lora.applier import LoraApplier
from modules.conditioning.lora.files import LoraFile, guess_family, list_loras
from modules.conditioning.lora.naming import ldm_unet_module_map, module_lookup

__all__ = ["LoraApplier", "LoraFile", "LoraRequest", "guess_family", "ldm_unet_module_map", "list_loras",
           "module_lookup"]
