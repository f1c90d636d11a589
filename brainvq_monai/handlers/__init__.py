from .anomaly import AnomalyWriter
from .budget import TimeBudgetHandler, ValidationHandler
from .checkpoint import BestCheckpointSaver, TrainingCheckpointHandler
from .metrics import MetricsJSONWriter, MultiScaleSSIMHandler, SSIMHandler, batch_item_names, reconstruction_metrics
from .samples import SampleWriter
from .tensorboard import (
    CodebookTensorBoardHandler,
    LearningRateTensorBoardHandler,
    LossTensorBoardHandler,
    PriorSampleGridHandler,
    ReconstructionGridHandler,
)
from .writer import NullSummaryWriter, handlers_for_rank, summary_writer, validation_handlers_for_rank

__all__ = [
    "AnomalyWriter",
    "BestCheckpointSaver",
    "CodebookTensorBoardHandler",
    "LearningRateTensorBoardHandler",
    "LossTensorBoardHandler",
    "MetricsJSONWriter",
    "MultiScaleSSIMHandler",
    "NullSummaryWriter",
    "PriorSampleGridHandler",
    "ReconstructionGridHandler",
    "SampleWriter",
    "SSIMHandler",
    "TimeBudgetHandler",
    "TrainingCheckpointHandler",
    "ValidationHandler",
    "batch_item_names",
    "reconstruction_metrics",
    "handlers_for_rank",
    "summary_writer",
    "validation_handlers_for_rank",
]
