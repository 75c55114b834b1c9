"""Imported at start-up by every Python process of one test site (its `sts-client` gets this folder
on PYTHONPATH, and the SuperNode's ClientApp processes inherit it): in the round named by
STSFL_POISON_ROUND this site's train reply carries NaN weights - a diverged or corrupted site on
real processes, with no hook in the product. It wraps `SiteTask.train` when the ClientApp first
imports stsfl.client.site_task."""

import importlib.abc
import importlib.util
import os
import sys

POISON_ROUND = int(os.environ.get("STSFL_POISON_ROUND", "0"))


def _poison(site_task_class) -> None:
    train = site_task_class.train

    def poisoned_train(self, arrays, cfg):
        new_arrays, *rest = train(self, arrays, cfg)
        if int(cfg.get("server-round", 0)) == POISON_ROUND:
            import numpy as np

            from stsfl.common.params import arrays_to_numpy, numpy_to_arrays

            values = arrays_to_numpy(new_arrays)
            new_arrays = numpy_to_arrays({k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                                          for k, v in values.items()})
        return (new_arrays, *rest)

    site_task_class.train = poisoned_train


class _WrapSiteTaskOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "stsfl.client.site_task":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _poison(module.SiteTask)

        spec.loader.exec_module = exec_module
        return spec


if POISON_ROUND:
    sys.meta_path.insert(0, _WrapSiteTaskOnImport())
