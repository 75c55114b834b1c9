"""Task `linear-cox`: a clinical-only linear Cox model on tabular sites (FLamby's baseline shape).

- model.py: the linear model (one log-risk per endpoint);
- site.py: a site's table, split, standardisation and full-batch training (`LinearCoxSite`);
- server.py: feature moments combined, initial weights, the penalised objective (`LinearCoxServer`).
"""
