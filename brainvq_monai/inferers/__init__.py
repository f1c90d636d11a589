from .sampling import draw_tokens, sample_codes, token_nll

__all__ = ["draw_tokens", "sample_codes", "token_nll"]
