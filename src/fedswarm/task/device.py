"""Choosing the compute device for a PyTorch task.

``"auto"`` prefers an NVIDIA (or ROCm) GPU through CUDA, then Apple silicon through Metal Performance
Shaders (MPS), then the CPU. An explicit preference is honoured or refused: asking for ``"cuda"`` on a
machine without CUDA raises :class:`~fedswarm.core.errors.ConfigurationError` rather than silently
training on the CPU.

Availability is queried from PyTorch (``torch.cuda.is_available()``,
``torch.backends.mps.is_available()``) only when the caller does not pass it; tests and schedulers that
already know pass ``cuda_available=`` / ``mps_available=``. Without PyTorch installed nothing is available
and ``"auto"`` gives ``"cpu"``.
"""

from __future__ import annotations

from typing import Literal, get_args

from fedswarm.core.errors import ConfigurationError

__all__ = ["Device", "DevicePreference", "cuda_is_available", "mps_is_available", "select_device"]

DevicePreference = Literal["auto", "cpu", "cuda", "mps"]
Device = Literal["cpu", "cuda", "mps"]


def cuda_is_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def mps_is_available() -> bool:
    """Whether PyTorch is installed and the Apple MPS backend can be used."""
    try:
        import torch
    except ImportError:
        return False
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(
    preference: DevicePreference = "auto",
    *,
    cuda_available: bool | None = None,
    mps_available: bool | None = None,
) -> Device:
    """The device to train on: ``"cuda"``, ``"mps"`` or ``"cpu"``.

    Parameters
    ----------
    preference
        ``"auto"`` picks CUDA if available, else MPS if available, else the CPU. ``"cpu"``, ``"cuda"`` and
        ``"mps"`` ask for that device.
    cuda_available, mps_available
        Known availability; ``None`` asks PyTorch.

    Returns
    -------
    Device
        The chosen device type, usable as ``torch.device(result)``.

    Raises
    ------
    ConfigurationError
        If ``preference`` is unknown, or names a device that is not available.
    """
    if preference not in get_args(DevicePreference):
        raise ConfigurationError(f"device must be one of {list(get_args(DevicePreference))}, got {preference!r}")
    if preference == "cpu":
        return "cpu"
    if preference in ("auto", "cuda"):
        cuda = cuda_is_available() if cuda_available is None else cuda_available
        if cuda:
            return "cuda"
        if preference == "cuda":
            raise ConfigurationError("device 'cuda' was requested but CUDA is not available")
    mps = mps_is_available() if mps_available is None else mps_available
    if mps:
        return "mps"
    if preference == "mps":
        raise ConfigurationError("device 'mps' was requested but Apple MPS is not available")
    return "cpu"
