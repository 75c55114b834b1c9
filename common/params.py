"""Model parameters on the wire: torch state_dict <-> Flower ArrayRecord, FedBN key sets, sizes.

A state_dict maps names to tensors (parameters and buffers, e.g. BatchNorm running stats).
The ArrayRecord keeps the same names and dtypes, so `arrays_to_state_dict(state_dict_to_arrays(sd))`
is exact. Bytes per round = `arrays_nbytes(record)` per direction and site.

Half-precision transfer (the federation's `transfer_dtype`): `to_transfer` rounds the float32
tensors of a record to float16, or to bfloat16 (numpy has no bfloat16: its 16-bit patterns travel
as uint16), and `from_transfer` turns them back into float32; other tensors (integer buffers) travel
as they are. Aggregation stays in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

# Normalisation layers whose affine parameters and running statistics FedBN keeps local.
_NORM_TYPES = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
)


def state_dict_to_arrays(state_dict: Mapping[str, torch.Tensor], exclude: Iterable[str] = ()) -> ArrayRecord:
    """ArrayRecord of every tensor in `state_dict` except the names in `exclude` (copied to CPU numpy)."""
    skip = set(exclude)
    return ArrayRecord({name: Array(t.detach().cpu().numpy().copy()) for name, t in state_dict.items() if name not in skip})


def arrays_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """name -> numpy array for every entry of the record."""
    return {name: arr.numpy() for name, arr in record.items()}


def numpy_to_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    # np.ascontiguousarray would turn 0-d buffers (num_batches_tracked) into shape (1,)
    return ArrayRecord({name: Array(np.array(a, order="C", copy=True)) for name, a in arrays.items()})


def arrays_to_state_dict(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """name -> tensor (same dtype as sent)."""
    return {name: torch.from_numpy(np.array(a, copy=True)) for name, a in arrays_to_numpy(record).items()}


def load_arrays(model: torch.nn.Module, record: ArrayRecord) -> None:
    """Load the record into `model`; names the record lacks (FedBN's local layers) keep their values.
    A name the model does not know, or a shape mismatch, is an error naming the tensor."""
    own = model.state_dict()
    incoming = arrays_to_state_dict(record)
    unknown = sorted(set(incoming) - set(own))
    if unknown:
        raise ValueError(f"received parameters the model does not have: {', '.join(unknown[:5])}")
    for name, tensor in incoming.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"parameter {name}: received shape {tuple(tensor.shape)}, model has {tuple(own[name].shape)}")
    model.load_state_dict({**own, **incoming})


def normalisation_keys(model: torch.nn.Module) -> set[str]:
    """State-dict names that belong to normalisation layers (affine weights, running stats):
    what FedBN keeps at each site."""
    keys: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            for name in module.state_dict():
                keys.add(f"{prefix}.{name}" if prefix else name)
    return keys


def arrays_nbytes(record: ArrayRecord) -> int:
    """Payload bytes of the tensors in the record (what one direction of one site costs per round)."""
    return int(sum(a.numpy().nbytes for a in record.values()))


def float32_nbytes(record: ArrayRecord) -> int:
    """Bytes the record would take as plain float32 values (the reference size of the model)."""
    return int(sum(4 * a.numpy().size for a in record.values()))


TRANSFER_DTYPES = ("float32", "float16", "bfloat16")


def to_transfer(record: ArrayRecord, dtype: str) -> ArrayRecord:
    """The record as sent with `transfer_dtype` = dtype: its float32 tensors rounded to 16 bits
    (half the bytes); the record itself for float32."""
    if dtype == "float32":
        return record
    out = {}
    for name, a in arrays_to_numpy(record).items():
        if a.dtype == np.float32:
            a = a.astype(np.float16) if dtype == "float16" else _bfloat16_bits(a)
        out[name] = a
    return numpy_to_arrays(out)


def from_transfer(record: ArrayRecord, dtype: str) -> ArrayRecord:
    """A record received with `transfer_dtype` = dtype, its 16-bit tensors back in float32."""
    if dtype == "float32":
        return record
    packed = np.float16 if dtype == "float16" else np.uint16
    out = {}
    for name, a in arrays_to_numpy(record).items():
        if a.dtype == packed:
            a = a.astype(np.float32) if dtype == "float16" else _from_bfloat16_bits(a)
        out[name] = a
    return numpy_to_arrays(out)


def _bfloat16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (torch's round-to-nearest-even), as the uint16 bit patterns."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).reshape(a.shape)


def _from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(bits).view(np.int16)).view(torch.bfloat16).float().numpy().reshape(bits.shape)
