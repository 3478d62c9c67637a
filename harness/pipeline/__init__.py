"""The phases of a run, one module each, in data-flow order: plan → generate → score → analyse
→ write (`harness.runner` drives them; `pool` holds the models they share)."""
