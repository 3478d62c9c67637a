"""Loading `torch.save` files: tensors and dicts safely, and steering-vectors' `SteeringVector`
pickles without that package installed."""

from __future__ import annotations

import pickle
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.errors import UserError

SV_MODULE = "steering_vectors.steering_vector"
SV_CLASS = "SteeringVector"


@dataclass
class SteeringVectorStandIn:
    """Takes the place of `steering_vectors.steering_vector.SteeringVector` when unpickling: the
    same fields, none of the behaviour."""

    layer_activations: dict[int, torch.Tensor] = field(default_factory=dict)
    layer_type: str = "decoder_block"


class _StandInUnpickler(pickle.Unpickler):
    """A full unpickler that maps a missing steering-vectors class onto the stand-in."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == (SV_MODULE, SV_CLASS):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                return SteeringVectorStandIn
        return super().find_class(module, name)


_STAND_IN_PICKLE = types.ModuleType("harness_vectors_pickle")
_STAND_IN_PICKLE.Unpickler = _StandInUnpickler  # type: ignore[attr-defined]
_STAND_IN_PICKLE.load = pickle.load  # type: ignore[attr-defined]  # torch's legacy format reads magic with it


def load_torch(path: Path) -> object:
    """What `torch.save` wrote to `path`, on the CPU.

    Tensors, dicts, lists and numbers load with `weights_only=True`, as do steering-vectors'
    `SteeringVector` objects (mapped onto a stand-in class, so no code runs and the package need
    not be installed). Only when a steering-vectors pickle holds anything else is it unpickled in
    full (`weights_only=False`): pickle executes code, which is acceptable only because the user
    named this file; any other pickled object is refused.
    """
    try:
        with torch.serialization.safe_globals([(SteeringVectorStandIn, f"{SV_MODULE}.{SV_CLASS}")]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _mentions_steering_vectors(path):
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"{path}: holds pickled objects other than tensors, dicts and steering-vectors' "
                            f"SteeringVector, which are not unpickled ({first})") from None
    except Exception as err:  # a truncated or foreign file: torch raises several types
        raise UserError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_STAND_IN_PICKLE)
    except Exception as err:
        raise UserError(f"{path}: cannot unpickle this steering-vectors file ({type(err).__name__}: "
                        f"{err})") from None


def _mentions_steering_vectors(path: Path) -> bool:
    """Whether the pickle in `path` names a steering-vectors class (searched, not unpickled)."""
    needle = SV_MODULE.encode()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(needle in zf.read(name) for name in zf.namelist() if name.endswith("data.pkl"))
    return needle in path.read_bytes()
