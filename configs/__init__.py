"""Default YAML configuration shipped with the package (read with `stsfl.common.config.bundled`)."""
