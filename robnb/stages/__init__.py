"""Stage functions: what one notebook execution (stage × model size) does, callable and testable
without a notebook. Each writes its tidy records under ``<run_dir>/results`` and returns them."""

from robnb.stages.attack import attack_stage
from robnb.stages.finetune import finetune_stage
from robnb.stages.pretrain import pretrain_stage

__all__ = ["attack_stage", "finetune_stage", "pretrain_stage"]
