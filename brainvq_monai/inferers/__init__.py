from .prior_inferer import AutoregressivePriorInferer, load_codes, save_codes
from .sampling import draw_tokens, sample_codes, token_nll

__all__ = ["AutoregressivePriorInferer", "draw_tokens", "load_codes", "sample_codes", "save_codes", "token_nll"]
