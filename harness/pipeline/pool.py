"""The models a run shares: the generation model, and judges loaded once by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.models import LoadedModel, load_model


@dataclass
class ModelPool:
    """The generation model, shared with every task and with judges of the same name."""

    lm: LoadedModel
    judges: dict[str, LoadedModel] = field(default_factory=dict)

    def judge(self, name: str | None) -> LoadedModel:
        if name is None or name == self.lm.name:
            return self.lm
        if name not in self.judges:
            self.judges[name] = load_model(name, dtype=next(self.lm.model.parameters()).dtype)
        return self.judges[name]
