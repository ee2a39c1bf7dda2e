"""Stage 00: pretrain one size of the local ladder (cached by content) and record it."""

from __future__ import annotations

import time

import pandas as pd

from robnb.device import resolve_device
from robnb.params import Params
from robnb.results.provenance import now_iso, run_record
from robnb.results.store import write_records
from robnb.stages.common import cache_root, params_hash


def pretrain_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Pretrain one ladder size (or reuse its cache) and record its loss curve and FLOPs."""
    from robnb.pretrain import pretrain_size

    if params.family != "local-neox":
        raise ValueError(f"pretraining is for the local ladder; family '{params.family}' comes "
                         "pretrained from the hub")
    started, t0 = now_iso(), time.time()
    device = resolve_device(params.device)
    result = pretrain_size(size, params.pretrain, cache_root(params), device, progress=progress)
    meta = result.meta
    run_id = f"pretrain-{size}-{meta['key']}"
    rows = [{"run_id": run_id, "family": "local-neox", "model": size,
             "model_size": meta["classifier_params"],
             "non_embedding_params": meta["non_embedding_params"], **point}
            for point in meta["curve"]]
    write_records(params.run_dir, "pretraining", f"pretrain-{size}", rows)
    write_records(params.run_dir, "runs", f"pretrain-{size}",
                  [run_record(run_id, "pretrain", params_hash(params), str(device),
                              params.pretrain.seed, started, time.time() - t0,
                              status="cached" if result.reused else "ok")])
    return pd.DataFrame(rows)


