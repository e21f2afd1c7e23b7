"""Lightning callbacks that observe a distillation run (they never change the loss)."""

__all__: list[str] = []
