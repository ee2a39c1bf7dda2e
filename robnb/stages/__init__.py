"""Stage functions: what one notebook execution (stage × model size) does, callable and testable
without a notebook. Each writes its tidy records under ``<run_dir>/results`` and returns them."""

from robnb.stages.adversarial_training import adversarial_training_stage
from robnb.stages.adv_ood import adv_ood_stage
from robnb.stages.attack import attack_stage
from robnb.stages.finetune import finetune_stage
from robnb.stages.pretrain import pretrain_stage

__all__ = ["adv_ood_stage", "adversarial_training_stage", "attack_stage", "finetune_stage", "pretrain_stage"]
