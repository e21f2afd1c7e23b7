"""``skip_unused_hooks``: a callback's inherited no-op hooks taken out of Lightning's hook calls.

Lightning calls every hook of every callback, overridden or not, at every batch (``_call_callback_hooks``: for
each callback, ``getattr`` the hook, open a profiler section named after it, call it), and skips an attribute that
is not callable. A callback that overrides two hooks still pays for the other ~30 inherited no-ops: 6 of them in
each training step, 2 in each validation step. On a digits epoch that is about 150 calls per callback (measured
with ``make bench``'s ``per_sample.*`` rows, see docs/benchmarks.md). Setting the hooks a class does not define to
``None`` makes Lightning skip them.
"""

from __future__ import annotations

import lightning as L

# Called directly by Lightning (not through ``_call_callback_hooks``, which skips what is not callable): kept.
CALLED_DIRECTLY = frozenset({"on_save_checkpoint", "on_load_checkpoint", "state_dict", "load_state_dict"})
HOOKS = tuple(
    name for name in dir(L.Callback)
    if (name.startswith("on_") or name in ("setup", "teardown")) and name not in CALLED_DIRECTLY
)  # fmt: skip


def skip_unused_hooks(cls: type[L.Callback]) -> type[L.Callback]:
    """Class decorator: every Lightning callback hook that ``cls`` inherits unchanged from ``L.Callback`` becomes
    ``None`` on ``cls``, so Lightning does not call it. The hooks ``cls`` (or a base between it and ``L.Callback``)
    defines are untouched, and a subclass can still define any hook; it cannot call ``super()`` for one that is
    ``None`` here (there is nothing to call: ``L.Callback``'s are no-ops)."""
    for name in HOOKS:
        if getattr(cls, name) is getattr(L.Callback, name):
            setattr(cls, name, None)
    return cls
