"""The lab CLI (`stsfl`) and what it drives: the synthetic cohort generator, the demo federation,
pooled baselines and the TCGA-BRCA sites. The site client never imports it (import-linter)."""
