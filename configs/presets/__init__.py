"""Model presets: `paper` (MMNN sizes) and `cpu-small` (same structure, for tests and CPU demos)."""
