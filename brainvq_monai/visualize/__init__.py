from .grids import tile_grid, to_display_slice

__all__ = ["tile_grid", "to_display_slice"]
