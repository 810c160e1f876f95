"""One training loop (:func:`fit`) for classification and language modelling: typed configs,
deterministic batch sources, validated checkpoints, ``metrics.jsonl``, torchrun/DDP."""

from .batches import BatchSource, DatasetBatches, WindowBatches, token_windows
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (DataConfig, OptimConfig, RunConfig, ScheduleConfig, Section, TrainConfig,
                     bounded, load_config, load_settings, save_config, with_overrides)
from .distributed import (DistInfo, cleanup_distributed, setup_distributed, unwrap_model,
                          wrap_model)
from .loop import count_parameters, fit, to_device
from .metrics import MetricsLogger, read_metrics, topk_correct
from .optim import LRSchedule, build_optimizer
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .tasks import ClassificationTask, LanguageModelTask, Task

__all__ = [
    "RunConfig", "DataConfig", "TrainConfig", "OptimConfig", "ScheduleConfig", "load_config",
    "save_config", "with_overrides", "Section", "bounded", "load_settings",
    "Task", "ClassificationTask", "LanguageModelTask",
    "BatchSource", "DatasetBatches", "WindowBatches", "token_windows",
    "fit", "to_device", "count_parameters", "save_checkpoint", "load_checkpoint",
    "MetricsLogger", "read_metrics", "topk_correct", "build_optimizer", "LRSchedule",
    "DistInfo", "setup_distributed", "cleanup_distributed", "wrap_model", "unwrap_model",
    "seed_everything", "derive_seed", "capture_rng_state", "restore_rng_state",
]
