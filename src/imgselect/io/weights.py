"""Reading local weight files (``.pth``/``.pt``/``.safetensors``) as plain state dicts, without unpickling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file, unwrapped from common containers and prefixes.

    Accepts a bare state dict or one under ``state_dict``/``model``/``model_state_dict`` (Lightning and
    training-script checkpoints), and strips a ``net.``/``model.``/``module.`` prefix shared by every key.

    Raises:
        ValueError: the file holds something other than a state dict.
    """
    path = Path(path)
    state: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of weights")
    for prefix in ("net.", "model.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state
