"""What every config section shares: unknown keys, inf and NaN are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

BIG = 1e6  # the bound of lambdas, weights and rates: far past any useful value, far below overflow


class Section(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored. So are inf and NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
