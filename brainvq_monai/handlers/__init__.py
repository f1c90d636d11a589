from .metrics import MetricsJSONWriter, MultiScaleSSIMHandler, SSIMHandler, batch_item_names
from .tensorboard import (
    CodebookTensorBoardHandler,
    LearningRateTensorBoardHandler,
    PriorSampleGridHandler,
    ReconstructionGridHandler,
)

__all__ = [
    "CodebookTensorBoardHandler",
    "LearningRateTensorBoardHandler",
    "MetricsJSONWriter",
    "MultiScaleSSIMHandler",
    "PriorSampleGridHandler",
    "ReconstructionGridHandler",
    "SSIMHandler",
    "batch_item_names",
]
