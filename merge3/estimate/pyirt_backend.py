"""py-irt as an optional backend (extra ``pyirt``), for cross-checks against our own fits.

py-irt's ``multidim_2pl`` has logit = Σ_d γ_id (θ_md − b_id), which is our α_iᵀθ_m − β_i with
α_i = γ_i and β_i = γ_iᵀ b_i, so its fits convert exactly into an :class:`ItemBank`. Its
``1pl``/``2pl`` are D = 1 special cases (θ − b and γ(θ − b)).
"""

from __future__ import annotations

import numpy as np

from merge3.errors import ConfigError
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix


def fit_pyirt(
    rm: ResponseMatrix, kind: str = "2pl", dims: int = 1, epochs: int = 2000, seed: int = 0
) -> ItemBank:
    """Fit with py-irt's SVI (its default optimiser settings) and convert to an ItemBank."""
    try:
        import pandas as pd
        import pyro
        from py_irt.config import IrtConfig
        from py_irt.dataset import Dataset
        from py_irt.training import IrtModelTrainer
    except ImportError:
        raise ConfigError(
            "the py-irt backend needs the extra: pip install 'merge3[pyirt]'"
        ) from None
    model_type = {"1pl": "1pl", "2pl": "2pl" if dims == 1 else "multidim_2pl"}[kind]
    items = [f"i{i}" for i in range(len(rm.items))]
    subjects = [f"m{m}" for m in range(len(rm.models))]
    frame = pd.DataFrame(rm.values, columns=items)
    frame.insert(0, "subject", subjects)
    data = Dataset.from_pandas(frame, subject_column="subject", item_columns=items)
    config = IrtConfig(
        model_type=model_type,
        dims=dims if model_type == "multidim_2pl" else None,
        epochs=epochs,
        seed=seed,
        log_every=10**9,
    )
    trainer = IrtModelTrainer(config=config, data_path=None, dataset=data, verbose=False)
    trainer.train(device="cpu")
    p = trainer.best_params
    pyro.clear_param_store()
    rows = [data.subject_id_to_ix[s] for s in subjects]
    cols = [data.item_id_to_ix[i] for i in items]
    theta = np.asarray(p["ability"], float)[rows].reshape(len(rows), -1)
    diff = np.asarray(p["diff"], float)[cols].reshape(len(cols), -1)
    if "disc" in p:
        disc = np.asarray(p["disc"], float)[cols].reshape(len(cols), -1)
    else:
        disc = np.ones_like(diff)
    return ItemBank(
        kind=kind,
        items=rm.items,
        tasks=rm.tasks,
        alpha=disc,
        beta=(disc * diff).sum(axis=1),
        subjects=rm.subjects,
        abilities=dict(zip(rm.models, theta, strict=True)),
        info={"backend": "py-irt", "model_type": model_type, "epochs": epochs},
    )
