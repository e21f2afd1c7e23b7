"""Sharpness-aware minimisation: SAM (Foret et al., ICLR 2021) and its adaptive form ASAM (Kwon et al., ICML 2021).

One step takes two forward-backward passes through the closure that Lightning passes to ``step``:

    g   = dL/dw (w)                                  first pass, at the current weights w
    e   = rho * g / ||g||                            SAM: the steepest ascent of length rho
    e   = rho * T^2 g / ||T g||,   T = |w| + eta     ASAM: element-wise, scale-invariant
    g'  = dL/dw (w + e)                              second pass, at the perturbed weights
    w  <- SGD step from w with g'                    momentum, dampening, weight decay, nesterov as torch.optim.SGD

The norms run over every parameter that is perturbed, all parameter groups together; they stay tensors (no host
sync). Weight decay is the base SGD step's (applied at w, not part of g or e), as when SAM wraps SGD.

The training module uses ``in_second_pass`` to log nothing in the second pass and ``buffers_unchanged`` to keep the
second pass from updating BatchNorm running statistics (the second forward sees perturbed weights; only its gradient
is wanted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from distill.errors import DistillError

# Keeps e finite (zero) when every gradient is zero.
NORM_EPSILON = 1e-12
SAM_KEYS = ("rho", "adaptive", "eta")

NO_CLOSURE_MESSAGE = (
    "model.optimizer: SAM.step() got no closure, but SAM needs one to run its second forward-backward pass; "
    "trainer.precision=16-mixed (a GradScaler) and manual optimisation step without it: "
    "use --trainer.precision=bf16-mixed or 32-true, or a single-pass optimizer such as torch.optim.SGD"
)


class SAM(torch.optim.SGD):
    """SGD whose gradient is taken at the worst nearby weights ``w + e(w)`` (formulas in the module docstring).

    ``step(closure)`` calls ``closure`` twice; it must compute the loss at the current weights and back-propagate it
    (zeroing the gradients first or not: Lightning's closure does). While the second pass runs, ``self.perturbed`` is
    True: a training step reads it (``in_second_pass``) to log nothing twice.

    Every parameter of the optimizer is perturbed (the student's and the temperature policy's, e.g. CTKD's theta), as
    SAM perturbs all the weights it trains. A parameter group with ``rho=0`` is left out of the perturbation and of the
    norm. Under DDP each backward all-reduces the gradient, so e is computed from the global gradient and every rank
    perturbs identically.

    Args:
        params: parameters or parameter groups (a group may set its own ``rho``, ``adaptive``, ``eta``).
        lr, momentum, dampening, weight_decay, nesterov: the base SGD step's (torch.optim.SGD).
        rho: radius of the perturbation (SAM: 0.05 on CIFAR; ASAM's radius is on another scale, e.g. 0.5 to 2).
        adaptive: ASAM's element-wise normalisation ``T = |w| + eta``.
        eta: ASAM's offset (0.01 in the authors' code), so that zero weights are still perturbed.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.05,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
    ):
        for name, value in (("rho", rho), ("eta", eta)):
            if not value >= 0.0:
                raise DistillError(
                    f"model.optimizer.init_args.{name}: SAM's {name} must be >= 0, got {value}; "
                    f"set e.g. --model.optimizer.init_args.{name}={0.05 if name == 'rho' else 0.01}"
                )
        super().__init__(
            params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        )
        self.defaults.update(rho=float(rho), adaptive=bool(adaptive), eta=float(eta))
        self._fill_sam_defaults()
        self.perturbed = False

    def _fill_sam_defaults(self) -> None:
        # Groups given without them, and groups loaded from a plain SGD state dict, take the constructor's values.
        for group in self.param_groups:
            for key in SAM_KEYS:
                group.setdefault(key, self.defaults[key])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._fill_sam_defaults()
        self.perturbed = False

    @torch.no_grad()
    def perturbation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(parameter, e)]`` from the current gradients, for every perturbed parameter that has one.

        ``e`` has the parameter's shape; the norm is one tensor over all of them (no host sync).
        """
        parameters, normalised, scales = [], [], []
        for group in self.param_groups:
            if group["rho"] == 0:
                continue
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                scale = parameter.abs().add_(group["eta"]) if group["adaptive"] else None  # T
                parameters.append((parameter, group["rho"]))
                normalised.append(parameter.grad * scale if scale is not None else parameter.grad)  # T g
                scales.append(scale)
        if not parameters:
            return []
        norm = torch.nn.utils.get_total_norm(normalised) + NORM_EPSILON  # ||T g||
        perturbations = []
        for (parameter, rho), scaled_gradient, scale in zip(parameters, normalised, scales):
            direction = scaled_gradient * scale if scale is not None else scaled_gradient  # T^2 g
            perturbations.append((parameter, direction * (rho / norm.to(direction.device))))
        return perturbations

    @torch.no_grad()
    def step(self, closure: Callable[[], object] | None = None):
        """Two forward-backward passes through ``closure``, then the SGD step; returns the first pass's loss."""
        if closure is None:
            raise DistillError(NO_CLOSURE_MESSAGE)
        with torch.enable_grad():
            loss = closure()
        perturbations = self.perturbation()
        if not perturbations:  # rho = 0 everywhere (or no gradient): plain SGD, no second pass
            super().step()
            return loss
        originals = [parameter.detach().clone() for parameter, _ in perturbations]
        for parameter, perturbation in perturbations:
            parameter.add_(perturbation)
        self.perturbed = True
        try:
            self.zero_grad(set_to_none=True)  # the second gradient replaces the first, whatever the closure zeroes
            with torch.enable_grad():
                closure()
        finally:
            self.perturbed = False
            # Back to w exactly (copying, not subtracting e, so no rounding is left behind).
            for (parameter, _), original in zip(perturbations, originals):
                parameter.copy_(original)
        super().step()
        return loss


def in_second_pass(trainer) -> bool:
    """True while an optimizer of ``trainer`` (a Lightning Trainer, or None) runs SAM's second forward-backward.

    Reads Python flags only (no host sync). Raises ``DistillError`` under gradient accumulation, where the second
    pass would see only the last micro-batch.
    """
    if trainer is None or not any(getattr(optimizer, "perturbed", False) for optimizer in trainer.optimizers):
        return False
    if trainer.accumulate_grad_batches != 1:
        raise DistillError(
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} with model.optimizer SAM: SAM's "
            "second pass would see only the last micro-batch; set --trainer.accumulate_grad_batches=1 "
            "(raise the batch size instead)"
        )
    return True


@contextmanager
def buffers_unchanged(module: nn.Module) -> Iterator[None]:
    """Inside, the buffers of ``module``'s submodules in training mode are copies; on exit the originals are back.

    SAM's second forward must leave no trace but gradients: BatchNorm running statistics (and their
    ``num_batches_tracked``, whatever the momentum) are updated by the first pass only, and state a policy keeps for
    monitoring describes the first pass. Copies rather than save-and-restore: BatchNorm's autograd graph holds the
    running-statistics tensors, so writing the old values back in place before the backward would break it; the
    original tensors are never touched, so references held elsewhere (DDP's buffer list) stay valid. Modules in eval
    mode (the frozen teacher) cannot change and are skipped. Device copies only, no host sync.
    """
    originals = [
        (submodule, name, buffer)
        for submodule in module.modules()
        if submodule.training
        for name, buffer in submodule.named_buffers(recurse=False)
    ]
    for submodule, name, buffer in originals:
        setattr(submodule, name, buffer.clone())
    try:
        yield
    finally:
        for submodule, name, buffer in originals:
            setattr(submodule, name, buffer)
