"""Absolute risks: the site's answers to the baseline and calibration queries, `sts-client predict`,
recalibration at a new centre, model files."""
