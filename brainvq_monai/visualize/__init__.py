from .grids import display_plane, tile_grid, to_display_slice

__all__ = ["display_plane", "tile_grid", "to_display_slice"]
