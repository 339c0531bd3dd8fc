"""Sample-level DP-SGD for PyTorch tasks through Opacus (Yousefpour et al. 2021, "Opacus: User-Friendly
Differential Privacy Library in PyTorch"), the member side of ``dp = "local"``.

:class:`DPSGDTask` wraps a :class:`~fedswarm.task.torch_task.TorchTask` and replaces its local training
by DP-SGD (Abadi et al. 2016): each step Poisson-samples the member's records with rate
``q = min(1, B / n)`` (Opacus's ``UniformWithReplacementSampler``; ``ceil(n / B)`` steps per epoch),
clips every per-example gradient to ``C`` and adds ``N(0, (z C)^2)`` to their sum (Opacus's
``DPOptimizer``), then divides by the expected batch size ``q n``. The schedule matches
:func:`fedswarm.privacy.dp.local.dpsgd_schedule`, which the accountant uses.

Randomness. The record sampling and the noise are drawn from ``torch.Generator`` s seeded from
:mod:`secrets` on every fit, never from the round's public seed: an adversary who knew the seed could
subtract the noise or know which records were sampled. DP-SGD training is therefore not reproducible
run to run. (Opacus's ``secure_mode`` would in addition use a cryptographic generator for the noise; it
needs the torchcsprng package and is not used.)

Limits: the module must pass Opacus's validator (no BatchNorm); the task's loss must be a mean over the
batch (as :class:`TorchTask` requires), and FedProx's proximal term is not supported.
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Any

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, DataError, TaskError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import EvalResult, FitConfig, FitResult, MemberState
from fedswarm.task.torch_task import TorchTask

__all__ = ["DPSGDTask", "opacus_version", "require_opacus"]


def require_opacus() -> Any:
    """Import Opacus or raise :class:`ConfigurationError` saying how to install it."""
    try:
        import opacus  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigurationError("privacy.dp = 'local' runs DP-SGD with Opacus: pip install opacus") from None
    return opacus


def opacus_version() -> str:
    """The installed Opacus version."""
    return str(require_opacus().__version__)


def _fresh_generator() -> Any:
    import torch

    return torch.Generator().manual_seed(secrets.randbits(63))


class DPSGDTask:
    """A :class:`TorchTask` whose ``fit`` runs DP-SGD; evaluation and initialisation are the task's own.

    Parameters
    ----------
    inner
        The PyTorch task.
    noise_multiplier
        DP-SGD's ``z``.
    max_grad_norm
        The per-example clip ``C``.
    """

    def __init__(self, inner: TorchTask, *, noise_multiplier: float, max_grad_norm: float) -> None:
        require_opacus()
        if not isinstance(inner, TorchTask):
            raise ConfigurationError(
                f"privacy.dp = 'local' needs a PyTorch task (task.name = 'torch_mlp' or a TorchTask), "
                f"got {type(inner).__name__}"
            )
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ConfigurationError(f"privacy.noise_multiplier must be > 0 for DP-SGD, got {noise_multiplier!r}")
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ConfigurationError(f"privacy.clip must be > 0 for DP-SGD, got {max_grad_norm!r}")
        self.inner = inner
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.check_model()

    def check_model(self) -> None:
        """Refuse modules Opacus cannot train privately (BatchNorm ...).

        Raises
        ------
        ConfigurationError
            Naming the offending layers.
        """
        from opacus.validators import ModuleValidator  # type: ignore[import-untyped]

        problems = ModuleValidator.validate(self.inner.model_fn(), strict=False)
        if problems:
            raise ConfigurationError(
                "privacy.dp = 'local': the model cannot be trained with DP-SGD: "
                + "; ".join(str(p).split(".")[0] for p in problems[:3])
            )

    def init_parameters(self, *, seed: int) -> Parameters:
        return self.inner.init_parameters(seed=seed)

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        return self.inner.evaluate(parameters, data)

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        """Run ``config.epochs`` epochs of DP-SGD; metrics are not reported (they are not private)."""
        import torch
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler  # type: ignore[import-untyped]

        if config.proximal_mu > 0:
            raise TaskError("DP-SGD does not support FedProx's proximal term (privacy.dp = 'local')")
        task = self.inner
        parameters.check_schema(task.schema, who="DP-SGD global parameters")
        n = len(data)
        if n == 0:
            raise DataError("DP-SGD needs at least one training record")
        if data.x.ndim != 2:
            raise DataError(f"features must be 2-D, got shape {list(data.x.shape)}")
        names = task.schema.names
        model = task.model_fn()
        state_dict = model.state_dict()
        with torch.no_grad():
            for name in names:
                state_dict[name].copy_(torch.from_numpy(np.array(parameters[name])))
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        batch = max(1, config.batch_size)
        q = min(1.0, batch / n)
        steps = math.ceil(n / batch)
        xt = torch.from_numpy(np.array(data.x)).to(dtype=dtype)
        yt = torch.from_numpy(np.array(data.y, dtype=np.int64))
        gsm = GradSampleModule(model, loss_reduction="sum")
        base = task.optimizer_fn(gsm.parameters())
        if task.learning_rate == "config":
            for group in base.param_groups:
                group["lr"] = config.learning_rate
        optimizer = DPOptimizer(
            base,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=max(1, round(q * n)),
            loss_reduction="mean",
            generator=_fresh_generator(),
        )
        loss_fn = task.loss_fn or torch.nn.functional.cross_entropy
        sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=q, generator=_fresh_generator(), steps=steps)
        gsm.train()
        with warnings.catch_warnings():
            # Opacus's per-example gradient hooks fire on module outputs; PyTorch notes it on every fit
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for _ in range(config.epochs):
                for idx in sampler:
                    optimizer.zero_grad(set_to_none=True)
                    index = torch.as_tensor(idx, dtype=torch.long)
                    xb, yb = xt[index], yt[index]
                    logits = gsm(xb)
                    loss = loss_fn(logits, yb) * len(yb) if len(yb) else logits.sum() * 0.0
                    loss.backward()
                    optimizer.step()
        gsm.remove_hooks()
        new = model.state_dict()
        out = Parameters({name: new[name].detach().to("cpu").numpy().astype(parameters[name].dtype) for name in names})
        if not out.all_finite():
            raise TaskError("DP-SGD produced non-finite parameters; lower the learning rate")
        return FitResult(num_examples=n, parameters=out)
