"""The phases of a run, each talking to the sites through the messenger only: statistics, clinical
initialisation, training rounds, evaluation, cross-site validation, baseline, calibration, site outputs."""
