"""Imported at start-up by every Python process of one test site (its `sts-client` gets this folder
on PYTHONPATH, and the SuperNode's ClientApp processes inherit it): in the rounds named by
STSFL_POISON_ROUNDS (e.g. "2:slow,3:nan,5:huge") this site's train reply comes STSFL_SLOW_S seconds
late, or carries NaN weights, or weights a million times too large - a stuck, diverged or corrupted
site on real processes, with no hook in the product. It wraps `SiteTask.train` when the ClientApp first imports stsfl.client.federation.site_task."""

import importlib.abc
import importlib.util
import os
import sys
import time

POISONS = {int(r): kind for r, kind in (item.split(":") for item in os.environ.get("STSFL_POISON_ROUNDS", "").split(",") if item)}


def _poison(site_task_class) -> None:
    train = site_task_class.train

    def poisoned_train(self, arrays, cfg):
        new_arrays, *rest = train(self, arrays, cfg)
        kind = POISONS.get(cfg.server_round)
        if kind == "slow":
            time.sleep(float(os.environ["STSFL_SLOW_S"]))
        elif kind:
            import numpy as np

            from stsfl.common.params import arrays_to_numpy, numpy_to_arrays

            poison = (lambda v: np.full_like(v, np.nan)) if kind == "nan" else (lambda v: v * 1e6)
            values = arrays_to_numpy(new_arrays)
            new_arrays = numpy_to_arrays({k: poison(v) if v.dtype.kind == "f" else v for k, v in values.items()})
        return (new_arrays, *rest)

    site_task_class.train = poisoned_train


class _WrapSiteTaskOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "stsfl.client.federation.site_task":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _poison(module.SiteTask)

        spec.loader.exec_module = exec_module
        return spec


if POISONS:
    sys.meta_path.insert(0, _WrapSiteTaskOnImport())
