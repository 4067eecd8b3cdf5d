"""A run's architecture (cell, units per layer, dropout) from its config, of this version or the previous.

The previous version's config.json has hparams.units as one int and no cell: a one-layer GRU. This
version's has cell, layers, units (a list) and dropout, in hparams or at the top level of the file.
"""

import dataclasses

from .model import CELLS, units_list


def run_architecture(cfg) -> dict:
    """{"cell", "units": [U_0, ...], "dropout"} of a config as load_config returns it."""
    hp = cfg["hparams"]
    fields = dataclasses.asdict(hp) if dataclasses.is_dataclass(hp) else dict(hp)

    def get(key, default):
        return fields[key] if fields.get(key) is not None else cfg.get(key, default)

    cell = get("cell", "gru")
    if cell not in CELLS:
        raise ValueError(f"config.json: cell {cell!r} is not one of {', '.join(CELLS)}")
    units = units_list(cfg["units"] if isinstance(cfg.get("units"), list) else fields["units"], get("layers", None))
    return {"cell": cell, "units": units, "dropout": float(get("dropout", 0.0))}
