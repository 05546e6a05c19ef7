"""Import a backbone trained with the reference implementation (state-spaces/s4, standalone ``Sashimi``).

The reference's state_dict names map one to one onto our modules (we kept its module tree):

    reference                                         ours
    *.layer.layer.D                (1, H)             *.layer.D                  (H,)
    *.layer.layer.kernel.inv_dt    (H, 1)             *.layer.kernel.log_dt      (H,)        dt = exp(.)
    *.layer.layer.kernel.C         (1, H, N/2, 2)     *.layer.kernel.C           (H, N/2, 2) raw C or C̃
    *.layer.layer.kernel.{B,P}     (1, S, N/2, 2)     *.layer.kernel.{B,P}       (S, N/2, 2)
    *.layer.layer.kernel.A_{real,imag} (S, N/2)       *.layer.kernel.A_{real,imag}
    *.layer.layer.kernel.l_kernel  ()                 *.layer.kernel.l_kernel    (0 = C is raw C)
    Conv1d weights (out, in, 1)                       Linear weights (out, in)
    everything else                                   same name, same shape

Complex tensors are real views (last dim 2) on both sides. ``n_ssm`` and ``final_act`` are inferred from the
tensors when the config does not give them; every tensor's shape is checked before anything is copied. The config
is checked against the size bounds of ``checkpoint.validate_config`` before the backbone is built.
"""
from __future__ import annotations

import torch

from sashimi_core.checkpoint import validate_config
from sashimi_core.nn.sashimi import Backbone, SaShiMiConfig

# The reference Sashimi's defaults for the config keys we map (our SaShiMiConfig has the same ones).
_REFERENCE_DEFAULTS = {"d_model": 64, "n_layers": 8, "pool": (4, 4), "expand": 2, "ff": 2, "unet": False,
                       "dropout": 0.0, "d_state": 64}

_RENAMES = (
    (".layer.layer.kernel.inv_dt", ".layer.kernel.log_dt"),
    (".layer.layer.kernel.", ".layer.kernel."),
    (".layer.layer.D", ".layer.D"),
)


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        if old in key:
            return key.replace(old, new)
    return key


def _convert(key: str, value: torch.Tensor) -> torch.Tensor:
    if key.endswith("kernel.log_dt"):
        return value.reshape(-1)
    if key.endswith(".layer.D") or key.endswith("kernel.C") or key.endswith("kernel.B") or key.endswith("kernel.P"):
        return value.squeeze(0)
    if key.endswith(".weight") and value.dim() == 3 and value.shape[-1] == 1:  # Conv1d(k=1) -> Linear
        return value.squeeze(-1)
    return value


def config_from_reference(ref_config: dict, state_dict: dict) -> SaShiMiConfig:
    """Our SaShiMiConfig for a reference ``Sashimi(**ref_config)`` with these weights (validated, nothing built)."""
    if not isinstance(ref_config, dict):
        raise ValueError(f"the reference config must be a JSON object, got {type(ref_config).__name__}")
    allowed = {"d_model", "n_layers", "pool", "expand", "ff", "unet", "dropout", "d_state", "n_ssm",
               "final_act", "bidirectional", "mode", "l_max"}
    unknown = set(ref_config) - allowed
    if unknown:
        raise ValueError(f"unsupported reference config keys {sorted(unknown)}; supported: {sorted(allowed)}")
    if ref_config.get("bidirectional"):
        raise ValueError("bidirectional reference models are not autoregressive and cannot be imported")
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    b_key = next((k for k in sd if k.endswith("kernel.B")), None)
    lin_key = next((k for k in sd if k.endswith(".output_linear.0.weight")), None)
    if b_key is None:
        raise ValueError("state_dict has no S4 kernel tensors (*.kernel.B): is this a reference Sashimi?")
    try:
        s = sd[b_key].shape[-3]
        H = sd[b_key.replace("kernel.B", "kernel.C")].shape[-3]
        w = sd[lin_key].shape if lin_key is not None else None
        inferred_act = None if w is None else "glu" if w[0] == 2 * w[1] else "id"
    except (KeyError, IndexError) as exc:
        raise ValueError(f"the reference S4 tensors are incomplete or misshapen ({exc!r})") from exc
    n_ssm = ref_config.get("n_ssm", None if s == H and H > 1 else s)
    final_act = ref_config.get("final_act", inferred_act)
    fields = {**_REFERENCE_DEFAULTS, **{k: v for k, v in ref_config.items() if k in _REFERENCE_DEFAULTS}}
    return validate_config("sashimi", {**fields, "n_ssm": n_ssm, "final_act": final_act}, "reference config")


def backbone_from_reference(ref_config: dict, state_dict: dict) -> Backbone:
    """Build our Backbone from a reference ``Sashimi`` config and state_dict (keys with or without 'model.')."""
    cfg = config_from_reference(ref_config, state_dict)
    backbone = Backbone(cfg)
    ours = backbone.state_dict()
    converted = {}
    for key, value in state_dict.items():
        key = key.removeprefix("model.")
        new_key = _rename(key)
        converted[new_key] = _convert(new_key, value)
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    mismatched = [f"{k}: reference {tuple(converted[k].shape)} vs ours {tuple(ours[k].shape)}"
                  for k in ours if k in converted and converted[k].shape != ours[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError("reference weights do not fit the backbone they describe:"
                         + (f"\n  missing: {missing[:10]}" if missing else "")
                         + (f"\n  unexpected: {unexpected[:10]}" if unexpected else "")
                         + (f"\n  shape mismatch: {mismatched[:10]}" if mismatched else ""))
    backbone.load_state_dict({k: v.to(ours[k].dtype) for k, v in converted.items()})
    return backbone
